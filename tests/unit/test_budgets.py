"""Budgets (core/budgets.py) on the fakes: a key's spend per UTC period from the ledger,
the 429 `insufficient_quota` of synchronous requests, and batches that pause when their
key has spent its budget and resume when the period renews or the budget is raised.

Prices: the routing config prices the model `priced` at $1 per token ($0.50 for a batch
line), so a chat line "hello" (1 token in, 2 out) costs $1.50 in a batch."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import chat_line, jsonl, parse_jsonl

from batchgate.api.convert import batch_object
from batchgate.app import Services, build_services, build_worker
from batchgate.core.budgets import Budgets, BudgetStatus, describe_spend, period_bounds
from batchgate.core.errors import QuotaExceededError
from batchgate.core.ledger import SYNC, LedgerEntry
from batchgate.core.metering import Caller, current_caller
from batchgate.core.models import ApiKey, BatchRecord, BatchStatus
from batchgate.settings import Settings
from batchgate.testing import FakeClock, InMemoryStore, MemoryBlobStore

LINE_COST = 1.5  # a batch line of "hello" on `priced`
CONFIG = """
[models.priced]
backend = "local"
price = { input = 1000000, output = 1000000 }
"""


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_periods_are_utc_calendar_periods() -> None:
    now = ts("2026-11-28T21:40:00")  # a Saturday
    assert period_bounds("day", now) == (ts("2026-11-28T00:00:00"), ts("2026-11-29T00:00:00"))
    assert period_bounds("week", now) == (ts("2026-11-23T00:00:00"), ts("2026-11-30T00:00:00"))
    assert period_bounds("month", now) == (ts("2026-11-01T00:00:00"), ts("2026-12-01T00:00:00"))
    assert period_bounds("month", ts("2026-12-31T23:59:59")) == (ts("2026-12-01T00:00:00"), ts("2027-01-01T00:00:00"))
    assert period_bounds("week", ts("2026-11-30T00:00:00"))[0] == ts("2026-11-30T00:00:00"), "Monday starts a week"
    assert period_bounds("total", now) == (None, None)


class Harness:
    def __init__(self, tmp_path: Path):
        config = tmp_path / "batchgate.toml"
        config.write_text(CONFIG)
        settings = Settings(home=tmp_path, backend="scripted", config=config, budget_cache_seconds=0)
        self.clock = FakeClock(ts("2026-11-28T12:00:00"))
        self.svc: Services = build_services(settings, InMemoryStore(), MemoryBlobStore(), clock=self.clock)
        self.worker = build_worker(self.svc)
        cfg = self.worker.config
        cfg.poll_interval = cfg.flush_interval = 0.01
        cfg.status_check_interval = 0.05
        cfg.budget_check_interval = 0.0  # before every claim
        cfg.concurrency = cfg.claim_batch = 2

    def key(self, project: str, **budget: object) -> ApiKey:
        key, _ = self.svc.keys.create(project)
        return self.svc.keys.update(key.id, **budget) if budget else key

    def submit(self, key: ApiKey, lines: int) -> str:
        token = current_caller.set(Caller(key.id, key.project_id))
        try:
            rows = [chat_line(f"c{i}", model="priced") for i in range(lines)]
            with self.svc.files.upload(key.project_id) as upload:
                upload.write(jsonl(rows))
                file = upload.commit("batch", "input.jsonl")
            return self.svc.batches.create(key.project_id, file.id, "/v1/chat/completions", "24h").id
        finally:
            current_caller.reset(token)

    def batch(self, batch_id: str) -> BatchRecord:
        batch = self.svc.store.get_batch(batch_id, None)
        assert batch is not None
        return batch

    def spent(self, key: ApiKey) -> float:
        return self.svc.store.key_spend(key.id, None)

    def drive(self, until: Callable[[], bool], timeout: float = 15.0) -> None:
        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(stop))
            deadline = time.monotonic() + timeout
            try:
                while not until():
                    assert time.monotonic() < deadline, "timed out"
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
            finally:
                stop.set()
                await task

        asyncio.run(main())

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.drive(lambda: time.monotonic() >= end)

    def paused(self, batch_id: str) -> bool:
        return batch_object(self.batch(batch_id)).paused_reason == "budget_exhausted"

    def settled(self, batch_id: str) -> bool:
        """Paused, and no line of it still running."""
        b = self.batch(batch_id)
        return self.paused(batch_id) and self.svc.store.count_running(batch_id) == 0 and b.completed > 0

    def done(self, batch_id: str) -> bool:
        return self.batch(batch_id).status in ("completed", "cancelled", "expired", "failed")


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_a_batch_stops_spending_at_its_keys_budget_and_resumes_when_it_is_raised(h: Harness) -> None:
    key = h.key("alpha", budget_usd=10 * LINE_COST, budget_period="day")
    batch_id = h.submit(key, 40)
    h.drive(lambda: h.settled(batch_id))
    b = h.batch(batch_id)
    assert b.status == BatchStatus.IN_PROGRESS and b.budget_paused_at is not None
    assert batch_object(b).paused_reason == "budget_exhausted"
    # lines already running when the budget ran out finish: at most `concurrency` more
    assert 10 * LINE_COST <= h.spent(key) <= 12 * LINE_COST
    assert b.completed == h.spent(key) / LINE_COST
    stopped_at = b.completed
    h.run_for(0.3)  # many more worker turns
    assert h.batch(batch_id).completed == stopped_at, "a paused batch is claimed by no worker"

    h.svc.keys.update(key.id, budget_usd=1000.0)
    h.drive(lambda: h.done(batch_id))
    b = h.batch(batch_id)
    assert b.status == BatchStatus.COMPLETED and b.completed == 40 and b.budget_paused_at is None
    assert batch_object(b).paused_reason is None
    assert h.spent(key) == pytest.approx(40 * LINE_COST)


def test_a_paused_batch_resumes_when_the_period_rolls_over(h: Harness) -> None:
    key = h.key("alpha", budget_usd=4 * LINE_COST, budget_period="day")
    batch_id = h.submit(key, 10)
    h.drive(lambda: h.settled(batch_id))
    first_day = h.batch(batch_id).completed
    assert 4 <= first_day <= 6
    h.clock.advance(11 * 3600)  # 23:00 the same day: still spent
    h.run_for(0.3)
    assert h.batch(batch_id).completed == first_day
    # a minute past midnight UTC: a new day, a new budget (a line is in the day it started
    # in, and a line recorded at 00:00:00 exactly started a few ms before)
    h.clock.advance(3600 + 60)
    h.drive(lambda: h.done(batch_id) or (h.settled(batch_id) and h.batch(batch_id).completed > first_day))
    b = h.batch(batch_id)
    tomorrow = ts("2026-11-29T00:00:00")
    assert h.svc.store.key_spend(key.id, tomorrow) == pytest.approx((b.completed - first_day) * LINE_COST)
    assert b.completed == 10 or h.svc.store.key_spend(key.id, tomorrow) >= 4 * LINE_COST


def test_cancel_still_works_on_a_paused_batch(h: Harness) -> None:
    key = h.key("alpha", budget_usd=2 * LINE_COST, budget_period="total")
    batch_id = h.submit(key, 20)
    h.drive(lambda: h.settled(batch_id))
    h.svc.batches.cancel(key.project_id, batch_id)
    h.drive(lambda: h.done(batch_id))
    b = h.batch(batch_id)
    assert b.status == BatchStatus.CANCELLED and b.budget_paused_at is None
    assert batch_object(b).paused_reason is None
    with h.svc.blobs.open(b.output_file_id or "") as f:
        out = parse_jsonl(f.read())
    with h.svc.blobs.open(b.error_file_id or "") as f:
        err = parse_jsonl(f.read())
    assert len(out) == b.completed and len(out) + len(err) == 20, "every line in exactly one result file"


def test_a_spent_key_pauses_only_its_own_batches(h: Harness) -> None:
    spent_key = h.key("alpha", budget_usd=LINE_COST, budget_period="month")
    other_key = h.key("alpha", budget_usd=1000.0, budget_period="month")  # same project, another key
    free_key = h.key("beta")  # no budget at all
    spent_batch = h.submit(spent_key, 10)
    other_batch, free_batch = h.submit(other_key, 10), h.submit(free_key, 10)
    h.drive(lambda: h.done(other_batch) and h.done(free_batch) and h.settled(spent_batch))
    assert h.batch(other_batch).status == h.batch(free_batch).status == BatchStatus.COMPLETED
    assert h.batch(spent_batch).completed < 10 and h.paused(spent_batch)
    h.svc.budgets.check(other_key)  # the other key may still call synchronously
    with pytest.raises(QuotaExceededError) as refused:
        h.svc.budgets.check(h.svc.keys.show(spent_key.id))
    assert (refused.value.status, refused.value.code, refused.value.type) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert refused.value.retry_after is not None and refused.value.retry_after > 0, "until the month renews"


def _sync(store: InMemoryStore, key: ApiKey, cost: float, at: float) -> None:
    store.add_ledger_entry(LedgerEntry(SYNC, key.project_id, "/v1/chat/completions", at, at, key.id, cost=cost))


def test_synchronous_spend_is_refused_exactly_at_the_budget(h: Harness) -> None:
    store = h.svc.store
    assert isinstance(store, InMemoryStore)
    key = h.key("alpha", budget_usd=3.0, budget_period="week", budget_soft_usd=2.0)
    budgets = Budgets(store, h.clock, cache_seconds=0)
    now = h.clock.time()
    _sync(store, key, 1.0, period_bounds("week", now)[0] - 1)  # last week: not this week's
    for _ in range(3):
        budgets.check(key)
        _sync(store, key, 1.0, now)
    status = budgets.status(key)
    assert (status.spent_usd, status.exhausted, status.soft_reached, status.remaining_usd) == (3.0, True, True, 0.0)
    with pytest.raises(QuotaExceededError):
        budgets.check(key)
    assert budgets.status(key, now + 7 * 86400).spent_usd == 0, "the next week starts from nothing"
    other = h.key("beta", budget_usd=3.0)
    budgets.check(other)


def test_a_cached_spend_counts_what_this_process_metered_at_once(h: Harness) -> None:
    store = h.svc.store
    assert isinstance(store, InMemoryStore)
    key = h.key("alpha", budget_usd=2.0, budget_period="total")
    budgets = Budgets(store, h.clock, cache_seconds=3600)
    budgets.check(key)  # reads 0 and caches it
    _sync(store, key, 2.0, h.clock.time())
    budgets.check(key)  # the cache has not seen it yet
    budgets.spent_more(key.id, 2.0)  # as api/metering.py does once the row is written
    with pytest.raises(QuotaExceededError):
        budgets.check(key)


def test_an_answer_being_sent_counts_before_its_ledger_row_is_written(h: Harness) -> None:
    store = h.svc.store
    assert isinstance(store, InMemoryStore)
    key = h.key("alpha", budget_usd=2.0, budget_period="total")
    budgets = Budgets(store, h.clock, cache_seconds=0)  # every check reads the ledger
    budgets.check(key)
    budgets.spending(key.id, 2.0)  # as api/metering.py does as the answer is sent
    with pytest.raises(QuotaExceededError):
        budgets.check(key)  # the client read the answer and asked again before the row was written
    _sync(store, key, 2.0, h.clock.time())
    budgets.spent_more(key.id, 2.0, pending=2.0)
    assert budgets.status(key).spent_usd == 2.0, "counted once: the row, no longer the pending answer"


def test_a_spend_is_described_against_its_budget() -> None:
    day = BudgetStatus("k", "day", 10.0, 5.0, 12.0, 0.0, 86_400.0)
    assert describe_spend(day) == (
        "$12 today (UTC); budget exhausted, renews at 1970-01-02T00:00:00Z; soft threshold $5 passed"
    )
    assert describe_spend(BudgetStatus("k", "total", 10.0, None, 4.0, None, None)) == "$4 in total; $6 left"


def test_a_check_while_the_row_is_written_counts_the_answer_once(h: Harness) -> None:
    """A check racing the ledger write once saw the new row and the amount still pending
    for it: $6 + $3 pending against a $7.50 budget refused a key that had spent $6."""
    store = h.svc.store
    assert isinstance(store, InMemoryStore)
    key = h.key("alpha", budget_usd=7.5, budget_period="total")
    budgets = Budgets(store, h.clock, cache_seconds=0)
    _sync(store, key, 3.0, h.clock.time())
    budgets.check(key)  # as the API checks a key with a budget before answering
    budgets.spending(key.id, 3.0)  # the second answer, being sent
    seen: list[float] = []

    def write() -> float:  # the row lands, and another request's check runs meanwhile
        _sync(store, key, 3.0, h.clock.time())
        checking = threading.Thread(target=lambda: seen.append(budgets.status(key).spent_usd))
        checking.start()
        checking.join(0.2)  # it waits for the write to settle
        assert checking.is_alive()
        seen.append(-1.0)
        return 3.0

    assert budgets.write_spent(key.id, 3.0, write) == 3.0
    wait = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < wait:
        time.sleep(0.01)
    assert seen == [-1.0, 6.0]
    budgets.check(key)  # $6 of $7.50: allowed
