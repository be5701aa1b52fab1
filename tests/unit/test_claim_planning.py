"""Claim planning (core/scheduling.py): fair shares across projects (weighted), keys and
batches; at-risk batches first, earliest deadline first; the at-risk test itself; how
many lines a worker claims ahead and the order they start in."""

from __future__ import annotations

from batchgate.core.models import ClaimedRequest
from batchgate.core.scheduling import ClaimCandidate, ReadyLines, at_risk, lines_ahead, plan_claims, water_fill

NOW = 10_000
DAY = 86_400


def batch(
    ref: str,
    project: str = "A",
    key: str | None = "k",
    waiting: int = 1_000_000,
    weight: float = 1.0,
    priority: int = 0,
    done: int = 0,
    started: int = NOW - 100,
    expires: int = NOW + DAY,
) -> ClaimCandidate:
    return ClaimCandidate(
        ref, project, key, weight, priority, waiting, done + waiting, done, started - 10, started, expires
    )


def shares(plan: list[tuple[ClaimCandidate, int]]) -> dict[str, int]:
    return {c.ref: n for c, n in plan}


def test_water_fill_gives_what_one_cannot_use_to_the_others() -> None:
    assert water_fill([10, 1000], [1, 1], 256) == [10, 246]
    assert water_fill([1000, 1000], [1, 3], 100) == [25, 75]
    assert water_fill([5, 5, 5], [1, 1, 1], 2) == [1, 1, 0]  # fewer units than claimants: the first ones
    assert water_fill([0, 7], [1, 1], 100) == [0, 7]


def test_a_small_batch_of_another_project_is_claimed_whole_beside_a_huge_one() -> None:
    plan = plan_claims([batch("a-huge"), batch("b-small", project="B", waiting=10)], 256, NOW)
    assert shares(plan) == {"a-huge": 246, "b-small": 10}


def test_projects_share_before_batches_do() -> None:
    # project A has 8 batches, B one: B gets half the claim, not a ninth
    many = [batch(f"a{i}") for i in range(8)]
    plan = shares(plan_claims([*many, batch("b", project="B")], 160, NOW))
    assert plan["b"] == 80 and sum(plan[f"a{i}"] for i in range(8)) == 80


def test_project_weights_set_the_shares() -> None:
    plan = shares(plan_claims([batch("a"), batch("b", project="B", weight=3.0)], 100, NOW))
    assert plan == {"a": 25, "b": 75}


def test_keys_share_within_a_project_then_batches_within_a_key() -> None:
    cands = [batch("k1-a", key="k1"), batch("k1-b", key="k1"), batch("k2", key="k2")]
    assert shares(plan_claims(cands, 100, NOW)) == {"k1-a": 25, "k1-b": 25, "k2": 50}


def test_a_higher_priority_class_is_served_first() -> None:
    plan = shares(plan_claims([batch("low"), batch("high", project="B", priority=1, waiting=30)], 100, NOW))
    assert plan == {"high": 30, "low": 70}


def test_at_risk_batches_go_first_earliest_deadline_first_within_a_share_of_the_claim() -> None:
    # 100 lines done in 100 s: 1 line/s; 5,000 left and 1,000 s to go: at risk
    late = batch("late", project="A", waiting=5000, done=100, expires=NOW + 1000)
    later = batch("later", project="B", waiting=5000, done=100, expires=NOW + 2000)
    calm = batch("calm", project="C")
    plan = plan_claims([calm, later, late], 100, NOW)
    assert [c.ref for c, _ in plan][:2] == ["late", "later"]
    got = shares(plan)
    assert got["late"] >= 75  # at risk, earliest deadline: up to DEADLINE_SHARE of the claim first
    assert got["late"] > got["later"]
    assert got["calm"] > 0  # the rest is shared: a hopeless batch cannot starve everyone
    assert sum(got.values()) == 100


def test_at_risk_alone_takes_the_whole_claim() -> None:
    late = batch("late", waiting=5000, done=100, expires=NOW + 1000)
    assert shares(plan_claims([late], 100, NOW)) == {"late": 100}


def test_at_risk_compares_the_time_needed_at_the_throughput_so_far_with_the_time_left() -> None:
    # started 100 s ago, 100 lines done (1/s)
    assert at_risk(total=1100, done=100, created_at=0, started_at=NOW - 100, expires_at=NOW + 999, now=NOW)
    assert not at_risk(total=1100, done=100, created_at=0, started_at=NOW - 100, expires_at=NOW + 1001, now=NOW)
    assert not at_risk(total=100, done=100, created_at=0, started_at=NOW - 100, expires_at=NOW + 1, now=NOW)
    # nothing done yet: only in the last tenth of the window
    assert not at_risk(total=10, done=0, created_at=NOW - 100, started_at=NOW, expires_at=NOW + 900, now=NOW)
    assert at_risk(total=10, done=0, created_at=NOW - 950, started_at=NOW, expires_at=NOW + 50, now=NOW)
    assert at_risk(total=10, done=5, created_at=0, started_at=0, expires_at=NOW, now=NOW)  # out of time


def claimed(batch_id: str, n: int) -> list[ClaimedRequest]:
    return [ClaimedRequest(batch_id, "file", "/v1/chat/completions", line, 0, 10, 1, "proj") for line in range(n)]


def test_claimed_lines_start_in_turns_across_batches() -> None:
    ready = ReadyLines()
    ready.extend(claimed("a", 5))
    ready.extend(claimed("b", 2))  # claimed later: does not wait behind a's five
    assert len(ready) == 7 and ready.batch_ids() == {"a", "b"}
    order = [(c.batch_id, c.line) for c in (ready.pop() for _ in range(4))]
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert ready.batch_ids() == {"a"} and len(ready) == 3
    ready.extend(claimed("c", 1))
    assert [c.batch_id for c in ready.take("a")] == ["a", "a", "a"]
    assert len(ready) == 1 and ready.pop().batch_id == "c" and not ready


def test_lines_claimed_ahead_cover_the_rate_within_one_slot_each_and_one_claim() -> None:
    assert lines_ahead(rate=0, concurrency=64, claim_batch=256, seconds=0.05) == 64  # one per slot
    assert lines_ahead(rate=800, concurrency=64, claim_batch=256, seconds=0.05) == 64  # a slow upstream: as before
    assert lines_ahead(rate=4000, concurrency=64, claim_batch=256, seconds=0.05) == 200
    assert lines_ahead(rate=50_000, concurrency=64, claim_batch=256, seconds=0.05) == 256  # at most a claim
    assert lines_ahead(rate=50_000, concurrency=2, claim_batch=2, seconds=0.05) == 2
