"""Concurrency and rate caps for one upstream, shared by every event loop of the process
(the worker's loop and the API server's loop call the same upstream)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from batchgate.core.scheduling import UpstreamConcurrency

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]  # resolved with the holders then
Share = tuple[str, str]  # a batch line's project and batch

DECREASE = 0.7  # the limit kept after an overload (CUBIC's factor: gentler than halving, and as safe)
MAX_PAUSE = 60.0  # seconds: the most a Retry-After pauses batch admissions
# after an interactive request, batch lines leave one slot free for this long: the next
# interactive request finds it at once instead of waiting for a batch line to end (an
# upstream whose slots all hold batch lines would add a whole request's time to it)
INTERACTIVE_RESERVE_S = 10.0


@dataclass(slots=True)
class Permit:
    """One slot of a gate, held for one attempt. `release` it once."""

    gate: PriorityGate
    granted_at: float
    in_flight: int  # holders when it was granted, itself included
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.release()


class PriorityGate:
    """Slots to one upstream, across event loops, with two refinements of a semaphore:

    Priority: waiting interactive requests get the next free slot before any waiting batch
    line, first come first served, and while interactive requests keep coming (one in the
    last INTERACTIVE_RESERVE_S) batch lines leave one slot of the limit free for the next;
    batch work fills what is left, taking turns between
    shares (the worker passes a line's project and batch): between projects, then between
    a project's batches, so the lines one project or batch has in flight do not queue
    another's behind them (a 3-line batch is not behind the hundreds of lines a worker
    holds for a big one).

    Adaptive limit (AIMD): the number of slots starts at the configured maximum and drops
    to `DECREASE` of itself on an overload answer (429, 503, a timeout), at most once per
    wave: an overload of a request granted before the last decrease saw the old limit and
    says nothing new. Each success adds 1/limit (one slot per limit's worth of answers);
    below the level of the last overload it climbs by a whole slot per success (fast
    recovery), so the limit spends its time near the level the upstream can take rather
    than on the way back to it. A Retry-After pauses batch admissions until it is over.
    """

    def __init__(self, max_limit: int, clock: Callable[[], float] = time.monotonic):
        self.max_limit = max_limit
        self._clock = clock
        self._limit = float(max_limit)
        self._ceiling = math.inf  # the limit at the last overload
        self._last_decrease = -math.inf
        self._paused_until = -math.inf  # batch admissions wait until then
        self._resume_pending = False
        self._in_use = 0
        self._last_interactive = -math.inf
        self._lock = threading.Lock()
        self._interactive: deque[_Waiter] = deque()
        self._batch: dict[str, dict[str, deque[_Waiter]]] = {}  # by project, then batch, in turn order
        self._batch_waiting = 0

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    def snapshot(self, name: str) -> UpstreamConcurrency:
        with self._lock:
            return UpstreamConcurrency(
                name=name,
                limit=self.limit,
                max_limit=self.max_limit,
                in_flight=self._in_use,
                waiting_interactive=len(self._interactive),
                waiting_batch=self._batch_waiting,
                batch_paused_for=round(max(0.0, self._paused_until - self._clock()), 3),
            )

    async def acquire(self, interactive: bool, share: Share = ("", "")) -> Permit:
        with self._lock:
            if interactive:
                self._last_interactive = self._clock()
                free = self._in_use < self.limit and not self._interactive
            else:
                free = self._in_use < self._batch_limit() and not (self._interactive or self._batch_waiting)
                free = free and not self._paused()
            if free:
                self._in_use += 1
                return Permit(self, self._clock(), self._in_use)
            loop = asyncio.get_running_loop()
            waiter: _Waiter = (loop, loop.create_future())
            if interactive:
                self._interactive.append(waiter)
            else:
                self._batch.setdefault(share[0], {}).setdefault(share[1], deque()).append(waiter)
                self._batch_waiting += 1
                self._wake_at_resume()
        try:
            in_flight = await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                if self._forget(waiter, interactive, share):  # not granted yet: just leave the queue
                    raise
            # granted while being cancelled: _grant finds the future cancelled and passes the slot on
            raise
        return Permit(self, self._clock(), in_flight)

    def release(self) -> None:
        with self._lock:
            self._in_use -= 1
            grants = self._grants()
        self._hand_out(grants)

    def succeeded(self, permit: Permit | None = None) -> None:
        """An attempt got its answer: one step up, unless it was sent with slots to spare
        (a limit that is not used is not tested: it does not grow)."""
        with self._lock:
            if permit is not None and permit.in_flight < self.limit:
                pass
            elif self._limit < self._ceiling - 1:
                self._limit = min(self._limit + 1, self._ceiling - 1, self.max_limit)
            else:
                self._limit = min(self._limit + 1 / self._limit, self.max_limit)
            grants = self._grants()
        self._hand_out(grants)

    def overloaded(self, permit: Permit, retry_after: float | None) -> bool:
        """An attempt was answered 429/503 or timed out. Returns whether it counts as an
        attempt: not when it was sent at a concurrency above the limit as it now stands
        (the gateway's overload, not the request's: it is sent again at the lower limit)."""
        with self._lock:
            now = self._clock()
            if retry_after is not None and retry_after > 0:
                self._paused_until = max(self._paused_until, now + min(retry_after, MAX_PAUSE))
            if permit.granted_at > self._last_decrease:
                self._ceiling = self._limit
                self._limit = max(1.0, self._limit * DECREASE)
                self._last_decrease = now
            self._wake_at_resume()
            return permit.in_flight <= self.limit

    # ---- handing out slots (call with the lock held, then _hand_out without it) --------

    def _paused(self) -> bool:
        return self._clock() < self._paused_until

    def _batch_limit(self) -> int:
        """The slots batch lines may hold: one fewer than the limit while interactive
        requests keep coming (none fewer at a limit of 1: batch work would stop)."""
        recent = self._clock() - self._last_interactive < INTERACTIVE_RESERVE_S
        return self.limit - 1 if recent and self.limit > 1 else self.limit

    def _forget(self, waiter: _Waiter, interactive: bool, share: Share) -> bool:
        """Take a waiter out of its queue; False if it is not there (it was granted)."""
        if interactive:
            if waiter not in self._interactive:
                return False
            self._interactive.remove(waiter)
            return True
        batches = self._batch.get(share[0], {})
        queue = batches.get(share[1])
        if queue is None or waiter not in queue:
            return False
        queue.remove(waiter)
        self._batch_waiting -= 1
        if not queue:
            del batches[share[1]]
            if not batches:
                del self._batch[share[0]]
        return True

    def _next_batch(self) -> _Waiter:
        """The first waiter of the project, and of its batch, whose turn it is; both go to the back."""
        project = next(iter(self._batch))
        batches = self._batch.pop(project)
        batch = next(iter(batches))
        queue = batches.pop(batch)
        waiter = queue.popleft()
        if queue:
            batches[batch] = queue
        if batches:
            self._batch[project] = batches
        self._batch_waiting -= 1
        return waiter

    def _grants(self) -> list[tuple[_Waiter, int]]:
        grants = []
        while self._in_use < self.limit:
            if self._interactive:
                waiter = self._interactive.popleft()
            elif self._batch_waiting and not self._paused() and self._in_use < self._batch_limit():
                waiter = self._next_batch()
            else:
                break
            self._in_use += 1
            grants.append((waiter, self._in_use))
        return grants

    def _hand_out(self, grants: list[tuple[_Waiter, int]]) -> None:
        for (loop, future), in_flight in grants:
            try:
                loop.call_soon_threadsafe(self._grant, future, in_flight)
            except RuntimeError:  # that loop is closed: its waiter is gone, pass the slot on
                self.release()

    def _grant(self, future: asyncio.Future[int], in_flight: int) -> None:
        if future.done():  # cancelled meanwhile
            self.release()
        else:
            future.set_result(in_flight)

    def _wake_at_resume(self) -> None:
        """With batch lines waiting out a pause, have a loop look again when it ends."""
        if self._resume_pending or not self._batch_waiting or not self._paused():
            return
        loop = next(iter(next(iter(self._batch.values())).values()))[0][0]
        delay = self._paused_until - self._clock()
        try:
            loop.call_soon_threadsafe(loop.call_later, delay, self._resume)
        except RuntimeError:  # closed: its waiter is gone; the next one schedules again
            return
        self._resume_pending = True

    def _resume(self) -> None:
        with self._lock:
            self._resume_pending = False
            grants = self._grants()
            self._wake_at_resume()  # the pause was extended meanwhile
        self._hand_out(grants)


class RateLimit:
    """At most `per_minute` units (requests or tokens) per minute, spread evenly with a
    burst of one second's worth: the generic cell rate algorithm. Callers reserve their
    units under a lock, then sleep until their turn, so waiting costs no lock and callers
    on any event loop are served in order."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self._burst = 1.0  # seconds of credit
        self._theoretical = 0.0  # when everything reserved so far would have been sent at `rate`
        self._lock = threading.Lock()

    def reserve(self, units: float = 1.0) -> float:
        """Reserve `units`; returns how many seconds to wait before using them."""
        with self._lock:
            now = time.monotonic()
            allowed = max(now, self._theoretical - self._burst)
            self._theoretical = max(self._theoretical, allowed) + units / self.rate
            return allowed - now

    async def acquire(self, units: float = 1.0) -> None:
        wait = self.reserve(units)
        if wait > 0:
            await asyncio.sleep(wait)
