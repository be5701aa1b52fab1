"""Budgets: what a key may spend, in USD, per calendar period (UTC day, ISO week from
Monday, month) or in total, read from the ledger.

A key's spend is the sum of its ledger rows' cost (the batch discount applied) that
started in the period: one indexed sum (`ledger_by_key`, an index-only scan), cached
for `cache_seconds` per key and process, and raised at once by what this process itself
answers (`spending`, as the answer is sent and before its ledger row is written; then
`write_spent`, which writes the row and settles it under the lock reads take), so a
client that reads an answer and asks again is checked against it, and a burst through
one process cannot outrun its own cache.

- A synchronous request of a key whose spend has reached `budget_usd` is refused with
  429 `insufficient_quota` (`check`), Retry-After until the period renews.
- A key's batches stop being claimed (`enforce`, run by every worker): a validating or
  running batch of a spent key gets `budget_paused_at` (visible as `paused_reason: "budget_exhausted"`)
  and resumes by itself once the spend is under the budget again: the period renewed, or
  the budget was raised or removed. Lines already running finish and are metered, so
  the spend may pass the budget by what was running when it was reached. A paused
  batch still validates, can be cancelled, and expires at the end of its window.
- Passing `budget_soft_usd` is logged (once per key, period and process) and reported
  on the budget status and in /metrics; spending goes on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from batchgate.core.clock import Clock
from batchgate.core.errors import InvalidRequestError, QuotaExceededError
from batchgate.core.models import ApiKey, BatchStatus
from batchgate.core.ports import Store

log = logging.getLogger("batchgate.budgets")
PAUSED_REASON = "budget_exhausted"  # the batch object's `paused_reason` while a budget pauses it
# a spent key's batches in these statuses are paused: a validating one too, so that it
# does not start running between two checks
BUDGET_PAUSED_STATUSES = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})


def period_bounds(period: str, now: float) -> tuple[float | None, float | None]:
    """The start and end (epoch seconds, UTC) of the `period` holding `now`; (None, None)
    for `total`, which never renews."""
    if period == "total":
        return None, None
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = today, today + timedelta(days=1)
    elif period == "week":
        start = today - timedelta(days=today.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = today.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise InvalidRequestError(f"Unknown budget period {period!r}.", param="budget_period", code="invalid_value")
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A key's budget and what it spent in the current period."""

    key_id: str
    period: str
    budget_usd: float | None
    soft_usd: float | None
    spent_usd: float
    period_start: float | None  # None: the budget is a total
    period_end: float | None

    @property
    def exhausted(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    @property
    def soft_reached(self) -> bool:
        return self.soft_usd is not None and self.spent_usd >= self.soft_usd

    @property
    def remaining_usd(self) -> float | None:
        return None if self.budget_usd is None else max(self.budget_usd - self.spent_usd, 0.0)


def has_budget(key: ApiKey) -> bool:
    return key.budget_usd is not None or key.budget_soft_usd is not None


@dataclass(slots=True)
class _Spend:
    """A key's spend in one period, read incrementally by ledger id as `LedgerCounters`
    reads the ledger's sums: rows up to `settled_upto` are summed once (`settled`), newer
    rows on every read."""

    since: float | None
    settled: float = 0.0
    settled_upto: int = 0
    marks: deque[tuple[float, int]] = field(default_factory=deque)  # (time.monotonic(), largest id then)
    value: float = 0.0  # the last read, plus what this process metered since
    read_at: float = float("-inf")  # time.monotonic()


class Budgets:
    """Budget checks for the API (`check`) and the workers (`enforce`). Thread-safe."""

    def __init__(self, store: Store, clock: Clock, cache_seconds: float = 1.0, settle_seconds: float = 0.0):
        self.store = store
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.settle_seconds = settle_seconds  # see LedgerCounters: 0 on SQLite, 60 on PostgreSQL
        self._spend: dict[str, _Spend] = {}
        self._pending: dict[str, float] = {}  # answered by this process, its ledger row not yet written
        self._soft_logged: set[tuple[str, float | None]] = set()
        self._lock = threading.RLock()  # write_spent holds it while spent_more takes it

    def spent(self, key_id: str, since: float | None) -> float:
        """What the key spent since `since` (None: ever), at most `cache_seconds` old.

        The first read of a period sums the key's rows in it; later reads only the rows
        metered since (an index range on (key_id, id)), so a key with millions of rows a
        month costs no more to check than one with a few."""
        with self._lock:
            return self._read(key_id, since) + self._pending.get(key_id, 0.0)

    def _read(self, key_id: str, since: float | None) -> float:
        cached = self._spend.get(key_id)
        if cached is None or cached.since != since:
            cached = self._spend[key_id] = _Spend(since)
        now = time.monotonic()
        if now - cached.read_at < self.cache_seconds:
            return cached.value
        cached.marks.append((now, self.store.ledger_max_id()))
        bound = None
        while cached.marks and now - cached.marks[0][0] >= self.settle_seconds:
            bound = cached.marks.popleft()[1]
        if bound is not None and bound > cached.settled_upto:
            cached.settled += self.store.key_spend(key_id, since, cached.settled_upto, bound)
            cached.settled_upto = bound
        cached.value = cached.settled + self.store.key_spend(key_id, since, cached.settled_upto, None)
        cached.read_at = now
        return cached.value

    def spending(self, key_id: str | None, cost: float) -> None:
        """Count at once an answer this process is sending, whose ledger row is not written yet."""
        if key_id is None or not cost:
            return
        with self._lock:
            self._pending[key_id] = self._pending.get(key_id, 0.0) + cost

    def spent_more(self, key_id: str | None, cost: float, pending: float = 0.0) -> None:
        """What this process metered to the key, `cost`, is written to the ledger (just now):
        `pending` (what `spending` counted for it) is no longer pending, and `cost` is added
        to the cached sum unless a read that began since has summed it already (a read
        that began as the write ended may count it twice until the next read: never less)."""
        if key_id is None or not (cost or pending):
            return
        written_at = time.monotonic()
        with self._lock:
            if pending:
                left = self._pending.get(key_id, 0.0) - pending
                if left > 1e-12:
                    self._pending[key_id] = left
                else:
                    self._pending.pop(key_id, None)
            if (cached := self._spend.get(key_id)) is not None and cached.read_at < written_at:
                cached.value += cost

    def write_spent(self, key_id: str | None, pending: float, write: Callable[[], float]) -> float:
        """Run `write` (the insert of an answer's ledger row; returns the cost written, 0
        if it failed), then `spent_more`, both under the lock reads take: a read never sees
        both the new row and the amount still pending for it, which counted the answer
        twice and refused a key under its budget. A key this process has not read a budget
        for writes without the lock, so the ledger writes of keys without a budget do not
        wait for each other."""
        guarded = key_id is not None and key_id in self._spend
        with self._lock if guarded else contextlib.nullcontext():
            written = 0.0
            try:
                written = write()
            finally:
                self.spent_more(key_id, written, pending)
            return written

    def status(self, key: ApiKey, now: float | None = None) -> BudgetStatus:
        now = self.clock.time() if now is None else now
        start, end = period_bounds(key.budget_period, now)
        spent = self.spent(key.id, start)
        status = BudgetStatus(key.id, key.budget_period, key.budget_usd, key.budget_soft_usd, spent, start, end)
        self._report_soft(status)
        return status

    def check(self, key: ApiKey | None) -> None:
        """QuotaExceededError if the key has spent its budget for the period."""
        if key is None or key.budget_usd is None:
            return
        status = self.status(key)
        if status.exhausted:
            retry_after = None if status.period_end is None else max(status.period_end - self.clock.time(), 1.0)
            raise QuotaExceededError(
                f"The API key {key.id} has spent its {_describe(status)} budget of ${status.budget_usd:g} "
                f"(spent ${status.spent_usd:.6g}); it renews {_renewal(status)}.",
                retry_after=retry_after,
            )

    def enforce(self, now: float | None = None) -> tuple[list[str], list[str]]:
        """Pause the runnable batches of keys that spent their budget, resume those of keys
        that no longer have; the ids of the batches (paused, resumed)."""
        now = self.clock.time() if now is None else now
        spent: dict[str, BudgetStatus] = {}
        for key in self.store.list_api_keys():
            if key.budget_usd is not None and (status := self.status(key, now)).exhausted:
                spent[key.id] = status
        paused, resumed = self.store.set_budget_pauses(sorted(spent), int(now))
        for batch_id, key_id in paused:
            s = spent[key_id]
            log.warning(
                "batch %s paused (%s): key %s spent $%.6g of its %s budget of $%g; it resumes %s or when the budget is raised",
                batch_id, PAUSED_REASON, key_id, s.spent_usd, _describe(s), s.budget_usd, _renewal(s),
            )  # fmt: skip
        for batch_id, key_id in resumed:
            log.warning("batch %s resumed: key %s is within its budget again", batch_id, key_id)
        return [b for b, _ in paused], [b for b, _ in resumed]

    def _report_soft(self, status: BudgetStatus) -> None:
        if not status.soft_reached:
            return
        mark = (status.key_id, status.period_start)
        with self._lock:
            if mark in self._soft_logged:
                return
            self._soft_logged.add(mark)
        log.warning(
            "key %s passed its soft budget: spent $%.6g of $%g this %s (hard limit: %s)",
            status.key_id, status.spent_usd, status.soft_usd, _describe(status),
            "none" if status.budget_usd is None else f"${status.budget_usd:g}",
        )  # fmt: skip


def describe_spend(status: BudgetStatus) -> str:
    """What a key spent against its budget, in words (e.g. for `batchgate keys show`)."""
    when = {"day": "today (UTC)", "week": "this week", "month": "this month"}.get(status.period, "in total")
    words = f"${status.spent_usd:.6g} {when}"
    if status.exhausted:
        words += f"; budget exhausted, renews {_renewal(status)}"
    elif status.remaining_usd is not None:
        words += f"; ${status.remaining_usd:.6g} left"
    if status.soft_reached:
        words += f"; soft threshold ${status.soft_usd:g} passed"
    return words


def _describe(status: BudgetStatus) -> str:
    return {"day": "daily", "week": "weekly", "month": "monthly"}.get(status.period, "total")


def _renewal(status: BudgetStatus) -> str:
    if status.period_end is None:
        return "never (a total budget)"
    return "at " + datetime.fromtimestamp(status.period_end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
