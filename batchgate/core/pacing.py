"""Batch pacing: a batch's lines count against the rate limits and parallel cap of the key
that created it, and wait for room instead of failing with 429.

The worker asks `BatchPacer.admit` before it runs a line. For a key without limits that
costs nothing (its key is looked up once per batch every few seconds). For a limited key
the key's lines queue in this worker (one at a time per key: `asyncio.Lock` is FIFO),
and the head of the queue charges the shared limiter (core/ratelimit.py) or sleeps for
the time the limiter says it must wait. Only a line that cannot be admitted before its
batch expires ends, with `rate_limited`; while lines wait, the batch records why
(`Store.set_batch_pacing`, shown on the batch as `rate_limited_until` and `pacing`).

A key's limits hold across every worker and API process sharing the store; keys are
independent (a batch on key B never waits on key A's limits).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from batchgate.core.clock import Clock
from batchgate.core.models import ApiKey
from batchgate.core.ports import Store
from batchgate.core.ratelimit import Cost, Decision, Limiter, PromptTokens, estimate_cost, is_limited

# runs a store call off the event loop (the worker's store thread)
StoreCall = Callable[..., Awaitable[Any]]

log = logging.getLogger("batchgate.pacing")

KEY_TTL = 5.0  # seconds a batch's key (and its limits) is cached: an update applies within it
# seconds between writes of a batch's pacing note; a note holds for twice that (or the
# wait, if longer), so a batch that keeps waiting always shows one
NOTE_INTERVAL = 1.0


@dataclass(slots=True)
class Admission:
    """A line admitted under its key's limits: what to settle when it ends."""

    key: ApiKey
    decision: Decision
    charged: Cost


@dataclass(slots=True)
class Refusal:
    """A line that cannot run before its batch expires (or at all)."""

    message: str


class BatchPacer:
    def __init__(self, store: Store, clock: Clock, db: StoreCall, prompt_tokens: PromptTokens | None = None):
        self.store = store
        self.clock = clock
        self.db = db
        self.prompt_tokens = prompt_tokens  # a local model's tokenizer, where there is one
        self.limiter = Limiter(store)
        self._batches: dict[str, tuple[ApiKey | None, int, float]] = {}  # batch -> (key, expires_at, read at)
        self._lookups: dict[str, asyncio.Future[tuple[ApiKey | None, int]]] = {}  # batch -> its read in flight
        self._queues: dict[str, asyncio.Lock] = {}  # key id -> its lines' queue
        self._noted: dict[str, float] = {}  # batch -> monotonic time of its last pacing note

    async def admit(self, batch_id: str, body: Any, url: str = "") -> Admission | Refusal | None:
        """Wait until the line may run under its batch key's limits: its Admission (None
        for a key without limits), or a Refusal when it cannot run before the batch expires."""
        key, expires_at = await self._key_of(batch_id)
        if key is None or not is_limited(key):
            return None
        cost = estimate_cost(body, url, self.prompt_tokens, key.routing_profile)
        queue = self._queues.setdefault(key.id, asyncio.Lock())
        async with queue:
            while True:
                now = self.clock.time()
                decision = await self.db(self.limiter.acquire, key, cost, now)
                if decision.allowed:
                    return Admission(key, decision, cost)
                if decision.never:
                    return Refusal(f"{decision.message} The line can never run under this key's limits.")
                if now + decision.retry_after > expires_at:
                    return Refusal(f"{decision.message} The batch expires before the key's limits let this line run.")
                await self._note(batch_id, now + max(decision.retry_after, 2 * NOTE_INTERVAL), decision.message)
                await self.clock.sleep(decision.retry_after)

    async def release(self, admission: Admission, used: Cost | None) -> None:
        """The admitted line ended (`used`: its real usage; None: it did not run)."""
        await self.db(
            self.limiter.release, admission.key, admission.decision, admission.charged, used, self.clock.time()
        )

    def needs_release(self, admission: Admission) -> bool:
        """Whether `release` has anything to do (a lease, or tokens to settle)."""
        return admission.decision.lease is not None or any(r.kind != "requests" for r in admission.key.limits)

    async def routing_profile(self, batch_id: str) -> str | None:
        """The routing profile of the key that created the batch (cached as its limits are)."""
        key, _ = await self._key_of(batch_id)
        return key.routing_profile if key is not None else None

    async def _key_of(self, batch_id: str) -> tuple[ApiKey | None, int]:
        cached = self._batches.get(batch_id)
        if cached is None:  # shielded: a line cancelled while it waits must not cancel the others' read
            return await asyncio.shield(self._look_up(batch_id))
        if time.monotonic() - cached[2] >= KEY_TTL:
            # read again in the background; lines go on under the key as cached meanwhile
            # (every line waiting for the read stalled the whole worker each KEY_TTL)
            self._look_up(batch_id)
        return cached[0], cached[1]

    def _look_up(self, batch_id: str) -> asyncio.Future[tuple[ApiKey | None, int]]:
        """The one read of a batch's key in flight, started if there is none: the lines of
        a batch that ask together wait for one read, not one each."""
        lookup = self._lookups.get(batch_id)
        if lookup is None:
            lookup = self._lookups[batch_id] = asyncio.ensure_future(self._read_key(batch_id))
            lookup.add_done_callback(functools.partial(self._looked_up, batch_id))
        return lookup

    def _looked_up(self, batch_id: str, lookup: asyncio.Future[tuple[ApiKey | None, int]]) -> None:
        del self._lookups[batch_id]
        if not lookup.cancelled() and (exc := lookup.exception()) is not None:
            log.warning("batch %s: reading its key failed; will retry: %r", batch_id, exc)

    async def _read_key(self, batch_id: str) -> tuple[ApiKey | None, int]:
        batch = await self.db(self.store.get_batch, batch_id, None)
        key = await self.db(self.store.get_api_key, batch.key_id) if batch is not None and batch.key_id else None
        expires_at = batch.expires_at if batch is not None else 0
        if len(self._batches) > 1024:
            self._batches.clear()
        self._batches[batch_id] = (key, expires_at, time.monotonic())
        return key, expires_at

    async def _note(self, batch_id: str, until: float, why: str) -> None:
        """Record on the batch that its lines wait, at most once a NOTE_INTERVAL."""
        tick = time.monotonic()
        if tick - self._noted.get(batch_id, -NOTE_INTERVAL) < NOTE_INTERVAL:
            return
        self._noted[batch_id] = tick
        await self.db(self.store.set_batch_pacing, batch_id, until, f"waiting for the key's rate limits: {why}")
