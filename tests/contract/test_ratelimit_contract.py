"""The Store contract for key limit and budget fields, the rate limiter's counters and
leases, and batch pacing notes, on every store (the same SQL runs on SQLite and
PostgreSQL: store/keys_sql.py, store/ratelimit_sql.py)."""

from __future__ import annotations

import threading
from dataclasses import replace

from contract import test_store_contract as suite
from contract.test_store_contract import NOW

from batchgate.core.models import ApiKey, RateLimit
from batchgate.core.ports import LimiterWrite, Store
from batchgate.core.ratelimit import Cost, Limiter

store = suite.store  # the fixture: each test runs on every store

PER_MINUTE = RateLimit("requests", 3, 60)
TOKENS = RateLimit("total_tokens", 1000, 3600)


def a_key(store: Store, key_id: str = "key_l", **fields: object) -> ApiKey:
    project = store.ensure_project("acme", NOW)
    key = ApiKey(key_id, project.id, "limited", "bg-lim", NOW, **fields)  # type: ignore[arg-type]
    store.add_api_key(key, "hash-" + key_id)
    return key


def test_a_key_keeps_its_limits_and_budget_and_they_can_be_updated(store: Store) -> None:
    a_key(store, "key_plain")
    plain = store.get_api_key("key_plain")
    assert plain is not None and plain.limits == () and plain.max_parallel_requests is None
    assert (plain.budget_usd, plain.budget_period, plain.budget_soft_usd) == (None, "month", None)
    a_key(
        store, limits=(PER_MINUTE, TOKENS), max_parallel_requests=4, budget_usd=12.5, budget_period="week",
        budget_soft_usd=10.0,
    )  # fmt: skip
    found = store.find_api_key("hash-key_l")
    assert found is not None and found.limits == (PER_MINUTE, TOKENS) and found.max_parallel_requests == 4
    assert (found.budget_usd, found.budget_period, found.budget_soft_usd) == (12.5, "week", 10.0)
    changed = replace(found, limits=(RateLimit("input_tokens", 50, 1),), max_parallel_requests=None, budget_usd=None)
    assert store.update_api_key(replace(changed, budget_period="total", budget_soft_usd=None))
    updated = store.get_api_key("key_l")
    assert updated is not None and updated.limits == (RateLimit("input_tokens", 50, 1),)
    assert (updated.max_parallel_requests, updated.budget_usd, updated.budget_period) == (None, None, "total")
    assert updated.name == "limited" and updated.scopes == found.scopes, "the other fields stay"


def test_a_step_reads_and_writes_the_levels_of_its_key_only(store: Store) -> None:
    seen: list[tuple[dict[tuple[str, int], tuple[float, float]], int]] = []

    def write(levels: dict[tuple[str, int], tuple[float, float]], running: int) -> LimiterWrite:
        seen.append((levels, running))
        return LimiterWrite({("requests", 60): (2.5, NOW + 0.25), ("total_tokens", 3600): (900.0, NOW)})

    store.rate_limit_step("key_a", NOW, False, write)
    store.rate_limit_step(
        "key_a", NOW + 1, False, lambda levels, running: seen.append((levels, running)) or LimiterWrite()
    )
    store.rate_limit_step(
        "key_b", NOW + 1, True, lambda levels, running: seen.append((levels, running)) or LimiterWrite()
    )
    assert seen == [
        ({}, 0),
        ({("requests", 60): (2.5, NOW + 0.25), ("total_tokens", 3600): (900.0, NOW)}, 0),
        ({}, 0),
    ]
    store.rate_limit_step(
        "key_a", NOW + 2, False, lambda levels, running: LimiterWrite({("requests", 60): (1.0, NOW + 2)})
    )
    store.rate_limit_step(
        "key_a", NOW + 3, False, lambda levels, running: seen.append((levels, running)) or LimiterWrite()
    )
    assert seen[-1][0] == {("requests", 60): (1.0, NOW + 2), ("total_tokens", 3600): (900.0, NOW)}


def test_leases_count_until_dropped_or_expired(store: Store) -> None:
    running: list[int] = []

    def count(levels: dict[tuple[str, int], tuple[float, float]], n: int) -> LimiterWrite:
        running.append(n)
        return LimiterWrite()

    store.rate_limit_step("key_a", NOW, True, lambda levels, n: LimiterWrite(add_lease=("lease_1", NOW + 10)))
    store.rate_limit_step("key_a", NOW, True, lambda levels, n: LimiterWrite(add_lease=("lease_2", NOW + 100)))
    store.rate_limit_step("key_b", NOW, True, lambda levels, n: LimiterWrite(add_lease=("lease_3", NOW + 100)))
    store.rate_limit_step("key_a", NOW + 1, True, count)
    store.rate_limit_step("key_a", NOW + 1, True, lambda levels, n: LimiterWrite(drop_lease="lease_2"))
    store.rate_limit_step("key_a", NOW + 1, True, count)
    store.rate_limit_step("key_a", NOW + 11, True, count)  # lease_1 expired
    store.rate_limit_step("key_b", NOW + 11, True, count)
    assert running == [2, 1, 0, 1]


def test_the_limiter_holds_across_threads_exactly(store: Store) -> None:
    """Many threads (on the SQL stores: connections) admit exactly `limit` requests."""
    key = a_key(store, limits=(RateLimit("requests", 50, 3600),), max_parallel_requests=1000)
    limiter = Limiter(store)
    admitted: list[bool] = []

    def hammer() -> None:
        for _ in range(20):
            admitted.append(limiter.acquire(key, Cost(), NOW).allowed)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 50 and len(admitted) == 120


def test_a_step_that_may_not_wait_is_taken_whole_or_not_at_all(store: Store) -> None:
    """`wait=False` (the API's check on its event loop): the step is taken as a waiting
    one is (True), or nothing is read or written (False: a store across the network
    never steps without a round trip). Mixed with waiting steps on threads, the limit
    holds exactly."""
    key = a_key(store, limits=(RateLimit("requests", 40, 3600),), max_parallel_requests=1000)
    limiter = Limiter(store)
    tried: list[bool | None] = []
    admitted: list[bool] = []

    def hammer(wait: bool) -> None:
        for _ in range(20):
            decision = limiter.acquire(key, Cost(), NOW) if wait else limiter.try_acquire(key, Cost(), NOW)
            if not wait:
                tried.append(None if decision is None else decision.allowed)
            if decision is not None:
                admitted.append(decision.allowed)

    threads = [threading.Thread(target=hammer, args=(wait,)) for wait in (True, False, True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 40, "every step taken counted once; none that was not"
    assert len(tried) == 40 and len(admitted) == 40 + sum(t is not None for t in tried)
    if not store.concurrent_writes:  # SQLite and memory step at once when no one else writes
        assert limiter.try_acquire(key, Cost(), NOW + 1) is not None
    else:
        assert all(t is None for t in tried)


def test_batch_pacing_notes(store: Store) -> None:
    assert store.batch_pacing(["batch_x"]) == {}
    store.set_batch_pacing("batch_x", NOW + 5.5, "waiting for requests=200/2s")
    store.set_batch_pacing("batch_y", NOW, "first")
    store.set_batch_pacing("batch_y", None, None)
    assert store.batch_pacing(["batch_x", "batch_y", "batch_z"]) == {
        "batch_x": (NOW + 5.5, "waiting for requests=200/2s")
    }
    assert store.batch_pacing([]) == {}
