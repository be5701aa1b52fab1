"""The Store contract for fair claims (core/scheduling.py decides, every store applies):
projects share before batches, project weights, at-risk batches first, the project on
each claim; and project weights themselves."""

from __future__ import annotations

from collections import Counter

from contract import test_store_contract as suite
from contract.test_store_contract import NOW, validated

from batchgate.core.ports import Store

store = suite.store  # the fixture: each test runs on every store


def by_batch(claims: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(c.batch_id for c in claims)


def test_projects_share_claims_before_their_batches_do(store: Store) -> None:
    a, b = store.ensure_project("a", NOW).id, store.ensure_project("b", NOW).id
    many = [validated(store, 100, project=a) for _ in range(5)]
    small = validated(store, 10, project=b)
    claims = store.claim_requests("w", 30, NOW)
    got = by_batch(claims)
    assert got[small.id] == 10  # its whole batch: half the claim was B's, it needed 10
    assert sum(got[m.id] for m in many) == 20  # the rest went to A
    assert {c.project_id for c in claims if c.batch_id == small.id} == {b}
    assert {c.project_id for c in claims if c.batch_id != small.id} == {a}


def test_project_weights_are_kept_and_set_the_shares(store: Store) -> None:
    a, b = store.ensure_project("a", NOW).id, store.ensure_project("b", NOW).id
    assert store.project_weights() == {a: 1.0, b: 1.0}
    assert store.set_project_weight(b, 3.0)
    assert not store.set_project_weight("proj_404", 2.0)
    assert store.project_weights() == {a: 1.0, b: 3.0}
    heavy_a, heavy_b = validated(store, 1000, project=a), validated(store, 1000, project=b)
    got = by_batch(store.claim_requests("w", 40, NOW))
    assert (got[heavy_a.id], got[heavy_b.id]) == (10, 30)


def test_a_batch_at_risk_of_missing_its_window_is_claimed_first(store: Store) -> None:
    calm = validated(store, 1000)
    # created at NOW with a 60 s window, nothing done 55 s later: in its last tenth, at risk
    late = validated(store, 1000, expires_at=NOW + 60)
    claims = store.claim_requests("w", 100, NOW + 55)
    assert claims[0].batch_id == late.id
    got = by_batch(claims)
    assert got[late.id] >= 75 and got[calm.id] > 0  # up to 3/4 of the claim first, the rest shared
    assert by_batch(store.claim_requests("w", 100, NOW + 60)) == {calm.id: 100}  # expired: never claimed
