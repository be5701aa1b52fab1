"""The Store contract for budgets and /metrics, on every store: a key's spend since a time,
budget pauses that keep a spent key's runnable batches from being claimed (and only
those), the ledger's sums by id range, and the batch gauges."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract import test_store_contract as suite
from contract.test_ledger_contract import keyed_batch, sync_entry
from contract.test_store_contract import NOW, A, B, failed, succeeded

from batchgate.core.models import BatchStatus
from batchgate.core.ports import Store
from batchgate.core.telemetry import LATENCY_BUCKETS_MS, LedgerTotals

store = suite.store  # the fixture: each test runs on every store


def test_a_keys_spend_is_the_cost_of_its_rows_since_a_time(store: Store) -> None:
    first = sync_entry(A, NOW - 10, key_id="key_a", cost=1.25)
    store.add_ledger_entry(first)
    second = sync_entry(A, NOW, key_id="key_a", cost=2.0)
    store.add_ledger_entry(second)
    store.add_ledger_entry(sync_entry(B, NOW, key_id="key_b", cost=4.0))
    b = keyed_batch(store, 2, "key_a")
    store.claim_requests("w", 10, NOW)
    store.record_results("w", [succeeded(b.id, 1), succeeded(b.id, 2)], NOW + 1)  # 0.5 each
    assert store.key_spend("key_a", None) == pytest.approx(4.25)
    assert store.key_spend("key_a", NOW) == pytest.approx(3.0)
    assert store.key_spend("key_a", NOW + 5) == 0
    assert store.key_spend("key_b", None) == pytest.approx(4.0)
    assert store.key_spend("key_none", None) == 0
    # by id range (the incremental reads of core/budgets.py)
    assert store.key_spend("key_a", None, first.id) == pytest.approx(3.0)
    assert store.key_spend("key_a", None, first.id, second.id) == pytest.approx(2.0)
    assert store.key_spend("key_a", NOW - 5, 0, second.id) == pytest.approx(2.0)
    assert store.key_spend("key_a", None, store.ledger_max_id()) == 0


def test_budget_pauses_follow_the_spent_keys_and_stop_claims(store: Store) -> None:
    spent, other = keyed_batch(store, 3, "key_spent"), keyed_batch(store, 3, "key_other")
    paused, resumed = store.set_budget_pauses(["key_spent"], NOW)
    assert (paused, resumed) == ([(spent.id, "key_spent")], [])
    assert store.get_batch(spent.id, A).budget_paused_at == NOW  # type: ignore[union-attr]
    assert store.get_batch(other.id, A).budget_paused_at is None  # type: ignore[union-attr]
    assert store.set_budget_pauses(["key_spent"], NOW + 1) == ([], []), "idempotent; the first pause time stays"
    assert store.get_batch(spent.id, A).budget_paused_at == NOW  # type: ignore[union-attr]
    assert {c.batch_id for c in store.claim_requests("w", 10, NOW)} == {other.id}
    assert store.batch_gauges().budget_paused == 1
    # the budget was raised (or renewed): no key is spent any more
    assert store.set_budget_pauses([], NOW + 2) == ([], [(spent.id, "key_spent")])
    assert {c.batch_id for c in store.claim_requests("w", 10, NOW)} == {spent.id}
    # a paused batch that is cancelled is no longer paused; cancel works on it
    again = keyed_batch(store, 2, "key_spent")
    store.set_budget_pauses(["key_spent"], NOW + 3)
    assert store.request_cancel(again.id, NOW + 3)
    assert store.set_budget_pauses(["key_spent"], NOW + 4) == ([], [(again.id, "key_spent")])
    assert store.get_batch(again.id, A).status == BatchStatus.CANCELLING  # type: ignore[union-attr]


def test_ledger_totals_sum_rows_by_id_range(store: Store) -> None:
    store.add_ledger_entry(
        sync_entry(A, NOW, model="m", backend="local", status_code=200, input_tokens=2, output_tokens=3, cost=1.0,
                   latency_ms=40)
    )  # fmt: skip
    store.add_ledger_entry(
        sync_entry(A, NOW, model="m", backend="local", status_code=200, input_tokens=1, output_tokens=1, cost=0.5,
                   latency_ms=700)
    )  # fmt: skip
    store.add_ledger_entry(sync_entry(B, NOW, resolved_model="r", status_code=None, latency_ms=400_000))
    b = keyed_batch(store, 2, "key_a")
    store.claim_requests("w", 10, NOW)
    ok = replace(succeeded(b.id, 1), backend="local", requested_model="m", latency_ms=60)
    store.record_results("w", [ok, failed(b.id, 2)], NOW + 1)
    top = store.ledger_max_id()
    assert top >= 5
    totals = {t.labels: t for t in store.ledger_totals(0, None)}
    sync_ok = totals[("sync", "m", "local", "200")]
    assert (sync_ok.requests, sync_ok.input_tokens, sync_ok.output_tokens, sync_ok.cost, sync_ok.latency_ms) == (
        2, 3, 4, 1.5, 740,
    )  # fmt: skip
    assert sync_ok.buckets == [int(b >= 40) + int(b >= 700) for b in LATENCY_BUCKETS_MS]
    assert totals[("sync", "r", "", "none")].buckets == [0] * len(LATENCY_BUCKETS_MS), "slower than every bound"
    assert totals[("batch", "m", "local", "200")].requests == 1
    failed_line = [t for t in totals.values() if t.kind == "batch" and t.status == "none"]
    assert [t.requests for t in failed_line] == [1]
    # by id range: the rows after `after`, up to `upto`
    early = {t.labels: t for t in store.ledger_totals(0, top - 2)}
    late = {t.labels: t for t in store.ledger_totals(top - 2, None)}
    assert sum(t.requests for t in early.values()) == top - 2
    assert sum(t.requests for t in late.values()) == 2
    merged: dict[tuple[str, str, str, str], LedgerTotals] = {}
    for part in (early, late):
        for labels, t in part.items():
            merged.setdefault(labels, LedgerTotals(*labels)).add(t)
    assert {k: (v.requests, v.cost) for k, v in merged.items()} == {
        k: (v.requests, pytest.approx(v.cost)) for k, v in totals.items()
    }
    assert store.ledger_totals(top, None) == []


def test_batch_gauges_count_batches_per_status_and_lines_not_done(store: Store) -> None:
    before = store.batch_gauges()
    b = keyed_batch(store, 5, "key_a")
    claims = store.claim_requests("w", 3, NOW)
    store.record_results("w", [succeeded(b.id, claims[0].line)], NOW)
    g = store.batch_gauges()
    assert g.by_status.get("in_progress", 0) == before.by_status.get("in_progress", 0) + 1
    assert g.pending_lines - before.pending_lines == 4, "5 lines, 1 done: 2 running and 2 never claimed"
    assert g.running_lines - before.running_lines == 2
    assert g.budget_paused == 0
