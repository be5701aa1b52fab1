"""The Store contract for the billing outbox (core/billing.py), on every store: an event
is kept once however often it is computed, claims lease the due event first, attempts
are logged and move their event on, failed events can be queued again."""

from __future__ import annotations

from dataclasses import replace

from contract import test_store_contract as suite
from contract.test_store_contract import NOW, A, B

from batchgate.core.billing import COST, FAILED, PENDING, SENT, TOKENS, BillingAttempt, BillingEvent, identifier
from batchgate.core.ports import Store

store = suite.store  # the fixture: each test runs on every store
HOUR = 3600
H0 = NOW // HOUR * HOUR


def an_event(project: str = A, meter: str = COST, hour: int = H0, seq: int = 0, value: int = 10) -> BillingEvent:
    return BillingEvent(
        identifier(project, meter, hour, seq), project, meter, hour, seq, f"bg_{meter}", "cus_1", value, hour, NOW,
        next_attempt_at=NOW,
    )  # fmt: skip


def test_an_event_computed_twice_is_kept_once(store: Store) -> None:
    first = an_event()
    assert store.add_billing_events([first, an_event(meter=TOKENS)]) == 2
    # the same identifier, or another identifier for the same (project, meter, hour, seq)
    assert store.add_billing_events([an_event(value=99), replace(an_event(), identifier="other")]) == 0
    assert store.add_billing_events([an_event(seq=1, value=5)]) == 1
    events = store.list_billing_events(None, 10)
    assert [(e.meter, e.seq, e.value) for e in events] == [(COST, 1, 5), (TOKENS, 0, 10), (COST, 0, 10)]
    assert events[2] == first  # every field as written
    assert store.list_billing_events(None, 1) == events[:1]


def test_totals_sum_each_hour_and_meter_whatever_the_status(store: Store) -> None:
    store.add_billing_events([
        an_event(), an_event(seq=1, value=5), an_event(meter=TOKENS, value=7), an_event(B, value=3),
        an_event(hour=H0 - HOUR, value=100),
    ])  # fmt: skip
    claimed = store.claim_billing_event(NOW, 60)
    assert claimed is not None
    store.record_billing_attempt(BillingAttempt(claimed.identifier, NOW, FAILED, 400, "no"), FAILED, NOW)
    totals = {(t.project_id, t.meter, t.bucket_start): (t.value, t.events) for t in store.billing_totals(H0)}
    assert totals == {(A, COST, H0): (15, 2), (A, TOKENS, H0): (7, 1), (B, COST, H0): (3, 1)}
    assert len(store.billing_totals(H0 - HOUR)) == 4


def test_claims_lease_the_event_due_first(store: Store) -> None:
    store.add_billing_events([
        an_event(), replace(an_event(B), next_attempt_at=NOW - 5), replace(an_event(meter=TOKENS), next_attempt_at=NOW + 50),
    ])  # fmt: skip
    first = store.claim_billing_event(NOW, 60)
    second = store.claim_billing_event(NOW, 60)
    assert (first and first.project_id, second and second.identifier) == (B, an_event().identifier)
    assert store.claim_billing_event(NOW, 60) is None  # leased, or not due yet
    assert store.billing_summary().next_attempt_at == NOW + 50
    third = store.claim_billing_event(NOW + 50, 60)
    assert third is not None and third.meter == TOKENS
    # a claimer that died: its events are due again when the lease runs out (ties: oldest first)
    again = store.claim_billing_event(NOW + 60, 60)
    assert again is not None and again.identifier == an_event().identifier


def test_attempts_are_logged_and_move_their_event(store: Store) -> None:
    store.add_billing_events([an_event(), an_event(B), an_event(meter=TOKENS)])
    ok, retry, bad = (an_event().identifier, an_event(B).identifier, an_event(meter=TOKENS).identifier)
    store.record_billing_attempt(BillingAttempt(retry, NOW, "retry", 429, "slow down", "req_1"), PENDING, NOW + 30)
    store.record_billing_attempt(BillingAttempt(ok, NOW + 1, SENT, 200, None, "req_2"), SENT, NOW + 1)
    store.record_billing_attempt(BillingAttempt(bad, NOW + 2, FAILED, 400, "No such customer"), FAILED, NOW + 2)
    # an event already sent stays sent (an exporter whose lease ran out recorded late)
    store.record_billing_attempt(BillingAttempt(ok, NOW + 3, "retry", None, "timed out"), PENDING, NOW + 60)
    events = {e.identifier: e for e in store.list_billing_events(None, 10)}
    assert (events[ok].status, events[ok].attempts, events[ok].sent_at, events[ok].last_error) == (
        SENT,
        1,
        NOW + 1,
        None,
    )
    assert (events[retry].status, events[retry].attempts, events[retry].next_attempt_at) == (PENDING, 1, NOW + 30)
    assert events[retry].last_error == "slow down"
    assert (events[bad].status, events[bad].last_error, events[bad].sent_at) == (FAILED, "No such customer", None)
    assert store.list_billing_attempts(ok) == [
        BillingAttempt(ok, NOW + 1, SENT, 200, None, "req_2"),
        BillingAttempt(ok, NOW + 3, "retry", None, "timed out", None),
    ]
    assert [e.identifier for e in store.list_billing_events(FAILED, 10)] == [bad]
    summary = store.billing_summary()
    assert (summary.pending, summary.sent, summary.failed, summary.next_attempt_at) == (1, 1, 1, NOW + 30)


def test_failed_events_can_be_queued_again(store: Store) -> None:
    store.add_billing_events([an_event(), an_event(B)])
    for e in store.list_billing_events(None, 10):
        store.record_billing_attempt(BillingAttempt(e.identifier, NOW, FAILED, 401, "bad key"), FAILED, NOW)
    assert store.retry_failed_billing_events(NOW + 100) == 2
    assert store.retry_failed_billing_events(NOW + 100) == 0
    summary = store.billing_summary()
    assert (summary.pending, summary.failed, summary.next_attempt_at) == (2, 0, NOW + 100)
    assert store.claim_billing_event(NOW + 99, 60) is None
    assert store.claim_billing_event(NOW + 100, 60) is not None
