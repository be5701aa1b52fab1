"""The billing exporter: computes meter events into the outbox (core/billing.py) and
sends the pending ones to Stripe, one at a time, recording every attempt.

An event is claimed with a lease (`next_attempt_at` moved past the request's timeout),
sent with its identifier as the Idempotency-Key, and its outcome recorded:

- 2xx: sent;
- 429, 408, 409, 5xx or no answer: retried later, after an exponential backoff with
  jitter, or the server's Retry-After if that is longer; the pass stops there (Stripe is
  overloaded or unreachable: the other events wait too). It is retried for as long as
  it takes;
- any other 4xx (an unknown customer or meter, a bad key): failed, with Stripe's error
  kept; `batchgate billing export --retry-failed` puts failed events back in the queue.

A crash after Stripe took an event but before the outcome is recorded leaves it claimed;
once the lease runs out it is sent again with the same identifier and Idempotency-Key,
and Stripe counts it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

from batchgate.core.billing import (
    FAILED,
    PENDING,
    RECENT_HOURS,
    RECHECK_SECONDS,
    SENT,
    BillingAttempt,
    BillingConfig,
    BillingEvent,
    compute_events,
)
from batchgate.core.clock import Clock, SystemClock
from batchgate.core.ports import Store

log = logging.getLogger("batchgate.billing")
P = ParamSpec("P")
R = TypeVar("R")
RETRY = "retry"
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx; 409: the same key is still in flight


@dataclass(slots=True)
class SendResult:
    """Stripe's answer to one meter event."""

    status_code: int | None  # None: no answer (connection error, timeout)
    error: str | None = None
    retry_after: float | None = None  # seconds
    request_id: str | None = None

    @property
    def sent(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        return self.status_code is None or self.status_code in RETRY_STATUSES or self.status_code >= 500


class MeterEventSender(Protocol):
    """Sends one meter event (engines/stripe_meter.py: Stripe's API)."""

    async def send(self, event: BillingEvent) -> SendResult: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 2.0  # seconds before the first retry (then doubling)
    cap: float = 600.0  # at most this between retries: well inside Stripe's 24 h of idempotency
    max_retry_after: float = 3600.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before the next try, after `attempts` tries: half the exponential step
        plus up to as much again at random (exporters retrying together spread apart),
        and never sooner than a Retry-After."""
        step = min(self.cap, self.base * 2 ** (attempts - 1))
        delay = step / 2 + random.uniform(0, step / 2)
        return max(delay, min(retry_after, self.max_retry_after)) if retry_after is not None else delay


@dataclass(slots=True)
class ExportReport:
    computed: int = 0  # events added to the outbox
    sent: int = 0
    retried: int = 0  # attempts that will be tried again
    failed: int = 0

    def add(self, other: ExportReport) -> None:
        self.computed += other.computed
        self.sent += other.sent
        self.retried += other.retried
        self.failed += other.failed


class BillingExporter:
    def __init__(
        self,
        store: Store,
        config: BillingConfig,
        sender: MeterEventSender,
        clock: Clock | None = None,
        policy: RetryPolicy | None = None,
    ):
        self.store = store
        self.config = config
        self.sender = sender
        self.clock = clock or SystemClock()
        self.policy = policy or RetryPolicy()
        self.lease = config.timeout + 10.0  # a claimed event is its claimer's until then
        self._store_thread: ThreadPoolExecutor | None = None
        # after a 429/5xx/no answer, no event is sent before then (the whole queue waits)
        self.hold_until = 0.0
        self._next_recheck = 0.0  # when the whole lookback is summed again (late usage)

    async def _db(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Store calls block: they run on the exporter's own thread (one connection)."""
        if self._store_thread is None:
            self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="batchgate-billing-store")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store_thread, functools.partial(call, *args, **kwargs))

    def compute(self) -> int:
        """Add the events the closed hours call for to the outbox; how many were new. The
        whole lookback every RECHECK_SECONDS, else the last RECENT_HOURS closed hours."""
        now = self.clock.time()
        whole = now >= self._next_recheck
        if whole:
            self._next_recheck = now + RECHECK_SECONDS
        events = compute_events(self.store, self.config, now, None if whole else RECENT_HOURS)
        return self.store.add_billing_events(events)

    async def export_once(self, compute: bool = True) -> ExportReport:
        """One pass: compute, then send the due events until none is left or one must wait."""
        report = ExportReport(computed=await self._db(self.compute) if compute else 0)
        while (
            self.clock.time() >= self.hold_until
            and (event := await self._db(self.store.claim_billing_event, self.clock.time(), self.lease)) is not None
        ):
            result = await self.sender.send(event)
            now = self.clock.time()
            attempt = BillingAttempt(event.identifier, now, RETRY, result.status_code, result.error, result.request_id)
            next_at = now
            if result.sent:
                attempt.outcome, attempt.error = SENT, None
                report.sent += 1
            elif result.retryable:
                next_at = now + self.policy.delay(event.attempts + 1, result.retry_after)
                report.retried += 1
            else:
                attempt.outcome = FAILED
                report.failed += 1
            status = {SENT: SENT, RETRY: PENDING, FAILED: FAILED}[attempt.outcome]
            await self._db(self.store.record_billing_attempt, attempt, status, next_at)
            if attempt.outcome == RETRY:
                self.hold_until = next_at
                log.warning(
                    "billing: %s not sent (%s); retry in %.0f s",
                    event.identifier, result.status_code or result.error, next_at - now,
                )  # fmt: skip
                break
            if attempt.outcome == FAILED:
                log.error("billing: %s failed (%s): %s", event.identifier, result.status_code, result.error)
        return report

    async def export(self, wait: float = 0.0) -> ExportReport:
        """Passes until nothing is due, waiting for retries due within `wait` seconds
        (the CLI's `batchgate billing export`)."""
        report = ExportReport()
        deadline = self.clock.time() + wait
        compute = True
        while True:
            report.add(await self.export_once(compute))
            compute = False
            due = await self._next_due()
            if due is None or due > deadline:
                return report
            await self.clock.sleep(max(0.0, due - self.clock.time()))

    async def _next_due(self) -> float | None:
        """When an event is next due to be sent (None: none is pending)."""
        due = (await self._db(self.store.billing_summary)).next_attempt_at
        return None if due is None else max(due, self.hold_until)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: a pass every `interval` seconds, and when a retry is due."""
        log.info("billing export to %s for %d project(s)", self.config.api_base, len(self.config.projects))
        next_compute = 0.0
        while not stop.is_set():
            wait = self.config.interval
            try:
                compute = self.clock.time() >= next_compute
                if compute:
                    next_compute = self.clock.time() + self.config.interval
                report = await self.export_once(compute)
                if report.computed or report.sent or report.failed:
                    log.info(
                        "billing: %d event(s) computed, %d sent, %d failed",
                        report.computed, report.sent, report.failed,
                    )  # fmt: skip
                due = await self._next_due()
                if due is not None:
                    wait = min(wait, max(0.05, due - self.clock.time()))
            except Exception:  # the store or Stripe misbehaving must not stop the process
                log.exception("billing export pass failed; next in %.0f s", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def aclose(self) -> None:
        await self.sender.aclose()
        if self._store_thread is not None:
            self._store_thread.shutdown(wait=True)
            self._store_thread = None
