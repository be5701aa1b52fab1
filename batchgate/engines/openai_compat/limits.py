"""Concurrency and rate caps for one upstream, shared by every event loop of the process
(the worker's loop and the API server's loop call the same upstream)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque


class SharedSemaphore:
    """At most `limit` holders at once, across event loops; waiters are served in order."""

    def __init__(self, limit: int):
        self._free = limit
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    async def __aenter__(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            loop = asyncio.get_running_loop()
            waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] = (loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:  # not granted yet: just leave the queue
                    self._waiters.remove(waiter)
                    raise
            # granted while being cancelled: _grant finds the future cancelled and passes the slot on
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            loop, future = self._waiters.popleft()
        try:
            loop.call_soon_threadsafe(self._grant, future)
        except RuntimeError:  # that loop is closed: its waiter is gone, pass the slot on
            self.release()

    def _grant(self, future: asyncio.Future[None]) -> None:
        if future.done():  # cancelled meanwhile
            self.release()
        else:
            future.set_result(None)


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
