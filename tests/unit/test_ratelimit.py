"""core/ratelimit.py on the in-memory store and a fake clock: exact boundaries (N
admitted, N+1 refused, recovery as the window slides), independent limits, token
settlement, the parallel cap, and the header values."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from batchgate.core.models import ApiKey, RateLimit
from batchgate.core.ratelimit import Cost, Limiter, describe_limit, estimate_cost, parse_limit, reset_text
from batchgate.store.sqlite import SQLiteStore
from batchgate.testing import FakeClock, InMemoryStore

T0 = 1_800_000_000.0


def limiter_and_key(*limits: RateLimit, parallel: int | None = None) -> tuple[Limiter, ApiKey]:
    store = InMemoryStore()
    key = ApiKey("key_1", "proj_1", "", "bg-", 0, limits=limits, max_parallel_requests=parallel)
    store.add_api_key(key, "h")
    return Limiter(store), key


def test_n_admitted_then_refused_then_one_more_per_refill_interval() -> None:
    clock = FakeClock(T0)
    limiter, key = limiter_and_key(RateLimit("requests", 5, 10))  # one back every 2 s
    assert all(limiter.acquire(key, Cost(), clock.time()).allowed for _ in range(5))
    refused = limiter.acquire(key, Cost(), clock.time())
    assert not refused.allowed and refused.retry_after == pytest.approx(2.0)
    assert "5 requests per 10 s" in refused.message and refused.refused_by == RateLimit("requests", 5, 10)
    clock.advance(1.999)
    assert not limiter.acquire(key, Cost(), clock.time()).allowed
    clock.advance(0.001)
    assert limiter.acquire(key, Cost(), clock.time()).allowed, "the window slid by one refill interval"
    assert not limiter.acquire(key, Cost(), clock.time()).allowed
    clock.advance(10)
    assert sum(limiter.acquire(key, Cost(), clock.time()).allowed for _ in range(7)) == 5, (
        "a full window later: N again"
    )


def test_a_refused_request_charges_nothing() -> None:
    clock = FakeClock(T0)
    limiter, key = limiter_and_key(RateLimit("requests", 2, 60), RateLimit("input_tokens", 100, 60))
    assert limiter.acquire(key, Cost(1, 80), clock.time()).allowed
    refused = limiter.acquire(key, Cost(1, 30), clock.time())
    assert not refused.allowed and refused.refused_by == RateLimit("input_tokens", 100, 60)
    assert refused.retry_after == pytest.approx(10 * 60 / 100)  # 10 tokens over, 100 per 60 s
    ok = limiter.acquire(key, Cost(1, 20), clock.time())
    assert ok.allowed, "the refused request took no request slot and no tokens"
    requests, tokens = ok.header_states()
    assert requests is not None and (requests.remaining, requests.reset_s) == (0, pytest.approx(60.0))
    assert tokens is not None and (tokens.remaining, tokens.reset_s) == (0, pytest.approx(60.0))


def test_limits_are_independent_and_each_has_its_window() -> None:
    clock = FakeClock(T0)
    minute, hour = RateLimit("requests", 3, 60), RateLimit("requests", 5, 3600)
    limiter, key = limiter_and_key(minute, hour)
    assert [limiter.acquire(key, Cost(), clock.time()).allowed for _ in range(4)] == [True, True, True, False]
    clock.advance(60)
    decisions = [limiter.acquire(key, Cost(), clock.time()) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].refused_by == hour and decisions[-1].retry_after == pytest.approx(
        720 - 60
    )  # one hour-slot refills every 720 s


def test_output_and_total_token_limits_charge_the_estimate_and_settle_the_real_use() -> None:
    clock = FakeClock(T0)
    limiter, key = limiter_and_key(RateLimit("output_tokens", 100, 100), RateLimit("total_tokens", 150, 100))
    charged = Cost(1, 10, 90)
    decision = limiter.acquire(key, charged, clock.time())
    assert decision.allowed
    assert not limiter.acquire(key, Cost(1, 0, 20), clock.time()).allowed
    limiter.release(key, decision, charged, Cost(1, 10, 30), clock.time())  # it used 60 output tokens fewer
    assert limiter.acquire(key, Cost(1, 0, 60), clock.time()).allowed
    over = limiter.acquire(key, Cost(1, 0, 0), clock.time())
    assert over.allowed, "a request with no output estimate is admitted while the levels are within the limits"
    limiter.release(key, over, Cost(1, 0, 0), Cost(1, 0, 50), clock.time())  # used 50 it was not charged
    refused = limiter.acquire(key, Cost(1, 0, 1), clock.time())
    assert not refused.allowed and refused.retry_after == pytest.approx(41.0), "in debt: 140 of 100 in use"


def test_a_request_over_a_limit_on_its_own_can_never_run() -> None:
    limiter, key = limiter_and_key(RateLimit("input_tokens", 100, 60))
    refused = limiter.acquire(key, Cost(1, 101), T0)
    assert not refused.allowed and refused.never and "more than the limit" in refused.message


def test_max_parallel_requests() -> None:
    limiter, key = limiter_and_key(parallel=2)
    first, second = limiter.acquire(key, Cost(), T0), limiter.acquire(key, Cost(), T0)
    assert first.allowed and second.allowed and first.lease and second.lease
    third = limiter.acquire(key, Cost(), T0)
    assert not third.allowed and third.refused_by is None and "max_parallel_requests (2)" in third.message
    limiter.release(key, first, Cost(), None, T0 + 1)
    assert limiter.acquire(key, Cost(), T0 + 1).allowed


def test_keys_are_isolated() -> None:
    store = InMemoryStore()
    a = ApiKey("key_a", "p", "", "", 0, limits=(RateLimit("requests", 1, 60),))
    b = ApiKey("key_b", "p", "", "", 0, limits=(RateLimit("requests", 1, 60),))
    limiter = Limiter(store)
    assert limiter.acquire(a, Cost(), T0).allowed and not limiter.acquire(a, Cost(), T0).allowed
    assert limiter.acquire(b, Cost(), T0).allowed


def test_limit_text_and_reset_format() -> None:
    assert parse_limit("requests=600/1m") == RateLimit("requests", 600, 60)
    assert parse_limit("total_tokens=100000/3600") == RateLimit("total_tokens", 100000, 3600)
    assert parse_limit("input_tokens=5/h") == RateLimit("input_tokens", 5, 3600)
    assert parse_limit("output_tokens=7/2d") == RateLimit("output_tokens", 7, 172800)
    for bad in ("requests=5", "bytes=5/1m", "requests=-1/1m", "requests=5/1w"):
        with pytest.raises(ValueError):
            parse_limit(bad)
    assert [describe_limit(RateLimit("requests", 1, w)) for w in (60, 90, 7200, 86400)] == [
        "requests=1/1m", "requests=1/90s", "requests=1/2h", "requests=1/1d",
    ]  # fmt: skip
    assert [reset_text(s) for s in (0, 0.0201, 1, 1.5, 360, 3723.25)] == [
        "0ms",
        "21ms",
        "1s",
        "1.5s",
        "6m0s",
        "1h2m3.25s",
    ]


def test_estimates() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 16}
    assert estimate_cost(chat) == Cost(1, 11, 16)  # 40 + len("user") characters / 4
    assert estimate_cost({"model": "m", "input": ["abcd", "efgh"]}) == Cost(1, 2, 0)
    assert (
        estimate_cost({"model": "m", "prompt": "abc", "max_completion_tokens": 5, "max_tokens": 9}).output_tokens == 5
    )
    assert estimate_cost([1, 2]) == Cost()


def test_a_sqlite_step_that_may_not_wait_gives_way_to_any_other_writer(tmp_path: Path) -> None:
    """On SQLite `try_acquire` (the API's check on its event loop) steps only when the
    write lock is free at once: while another process's connection, or another thread
    of this process, writes it returns None and charges nothing."""
    store = SQLiteStore(tmp_path / "batchgate.db")
    store.ensure_project("p", 0)
    key = ApiKey("key_1", "p", "", "bg-", 0, limits=(RateLimit("requests", 2, 60),), max_parallel_requests=5)
    store.add_api_key(key, "h")
    limiter = Limiter(store)
    other = sqlite3.connect(tmp_path / "batchgate.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    started = time.perf_counter()
    assert limiter.try_acquire(key, Cost(), T0) is None
    assert time.perf_counter() - started < 0.5, "it does not wait for the lock"
    other.execute("COMMIT")
    with store._writer:  # another thread of this process writing
        assert limiter.try_acquire(key, Cost(), T0) is None
    first = limiter.try_acquire(key, Cost(), T0)
    assert first is not None and first.allowed and first.lease is not None
    assert limiter.acquire(key, Cost(), T0).allowed, "nothing was charged while it gave way: 2 of 2 now"
    refused = limiter.try_acquire(key, Cost(), T0)
    assert refused is not None and not refused.allowed
    assert limiter.release(key, first, Cost(), None, T0, wait=False)
    store.close()
