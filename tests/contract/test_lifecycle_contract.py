"""The Store contract for pause/resume, retry links and the webhook outbox, on every store."""

from __future__ import annotations

import json

from contract import test_store_contract as suite
from contract.test_store_contract import NOW, A, B, a_batch, batch_in, claim_job, status, validated

from batchgate.core.models import BatchError, BatchStatus
from batchgate.core.ports import Store
from batchgate.core.states import JobKind
from batchgate.core.webhooks import EVENT_TYPES, DeliveryStatus, WebhookAttempt, WebhookEndpoint

store = suite.store  # the fixture: each test runs on every store


def test_a_paused_batch_is_not_claimed_until_resumed(store: Store) -> None:
    paused = validated(store, 3)
    running = validated(store, 2)
    assert store.pause_batch(paused.id, NOW + 1)
    assert not store.pause_batch(paused.id, NOW + 2), "a paused batch is not paused again"
    got = store.get_batch(paused.id, A)
    assert got is not None and got.paused_at == NOW + 1 and got.paused and got.status == BatchStatus.IN_PROGRESS
    assert {c.batch_id for c in store.claim_requests("w", 10, NOW)} == {running.id}
    assert store.claim_requests("w", 10, NOW) == []
    assert store.resume_batch(paused.id)
    assert not store.resume_batch(paused.id), "a running batch is not resumed"
    assert [c.line for c in store.claim_requests("w", 10, NOW)] == [1, 2, 3]
    got = store.get_batch(paused.id, A)
    assert got is not None and got.paused_at is None and not got.paused


def test_a_paused_batch_keeps_its_window_and_can_be_cancelled(store: Store) -> None:
    b = validated(store, 2, expires_at=NOW + 10)
    assert store.pause_batch(b.id, NOW)
    assert claim_job(store, b.id, "owner", NOW + 10) == JobKind.EXPIRE, "the window runs while paused"
    store.release_batch_job(b.id, "owner", 0)
    c = validated(store, 2)
    assert store.pause_batch(c.id, NOW)
    assert store.request_cancel(c.id, NOW)
    got = store.get_batch(c.id, A)
    assert got is not None and got.status == BatchStatus.CANCELLING and not got.paused
    assert not store.resume_batch(c.id) and not store.pause_batch(c.id, NOW)


def test_only_validating_or_in_progress_batches_pause(store: Store) -> None:
    for wanted in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED, BatchStatus.FINALIZING):
        batch_id, _ = batch_in(store, wanted)
        assert not store.pause_batch(batch_id, NOW), wanted
    validating = a_batch(store)
    assert store.pause_batch(validating.id, NOW)
    assert claim_job(store, validating.id, "validator") == JobKind.VALIDATE, "a paused batch still validates"


def test_a_retry_link_is_written_once(store: Store) -> None:
    batch_id, _ = batch_in(store, BatchStatus.COMPLETED)
    assert store.link_retry(batch_id, "batch_new")
    assert not store.link_retry(batch_id, "batch_other")
    got = store.get_batch(batch_id, A)
    assert got is not None and got.metadata == {"retried_by": "batch_new"}


def _endpoint(store: Store, endpoint_id: str, project: str, events: tuple[str, ...] = EVENT_TYPES) -> None:
    store.add_webhook_endpoint(
        WebhookEndpoint(endpoint_id, project, f"http://hooks/{endpoint_id}", "whsec_AAAA", events, NOW, "d")
    )


def test_webhook_endpoints_are_per_project(store: Store) -> None:
    _endpoint(store, "wh_1", A)
    _endpoint(store, "wh_2", A, ("batch.failed",))
    _endpoint(store, "wh_3", B)
    assert [e.id for e in store.list_webhook_endpoints(A)] == ["wh_1", "wh_2"]
    got = store.get_webhook_endpoint("wh_2", A)
    assert got is not None and (got.events, got.secret, got.description) == (("batch.failed",), "whsec_AAAA", "d")
    assert store.get_webhook_endpoint("wh_3", A) is None
    assert not store.delete_webhook_endpoint("wh_3", A)
    assert store.delete_webhook_endpoint("wh_1", A)
    assert [e.id for e in store.list_webhook_endpoints(A)] == ["wh_2"]


def test_a_batch_end_writes_one_event_and_a_delivery_per_subscribed_endpoint(store: Store) -> None:
    _endpoint(store, "wh_all", A)
    _endpoint(store, "wh_failed", A, ("batch.failed",))
    _endpoint(store, "wh_other", B)
    running, owner = batch_in(store, BatchStatus.FINALIZING)
    assert store.batch_event(running) is None
    assert store.claim_webhook_deliveries(NOW, 10, NOW + 60) == []
    assert owner is not None and store.finish_batch(running, owner, BatchStatus.COMPLETED, [], "f", None, 2, 0, NOW)
    event = store.batch_event(running)
    assert event is not None and (event.type, event.project_id, event.created_at) == ("batch.completed", A, NOW)
    body = json.loads(event.body)
    assert body == {
        "id": event.id,
        "object": "event",
        "type": "batch.completed",
        "created_at": NOW,
        "data": {"id": running},
    }
    due = store.claim_webhook_deliveries(NOW, 10, NOW + 60)
    assert [(d.event_id, d.url, d.attempts, d.body) for d in due] == [(event.id, "http://hooks/wh_all", 0, event.body)]
    assert store.claim_webhook_deliveries(NOW, 10, NOW + 60) == [], "a claimed delivery is leased"
    assert not store.finish_batch(running, owner, BatchStatus.COMPLETED, [], "f", None, 2, 0, NOW)
    assert [d.id for d in store.claim_webhook_deliveries(NOW + 60, 10, NOW + 120)] == [due[0].id], "lease lapsed"

    failed = a_batch(store)
    claim_job(store, failed.id, "validator")
    assert store.fail_batch(failed.id, [BatchError("bad", "no")], NOW + 1, "validator")
    event = store.batch_event(failed.id)
    assert event is not None and event.type == "batch.failed"
    due = store.claim_webhook_deliveries(NOW + 1, 10, NOW + 61)
    assert sorted(d.url for d in due) == ["http://hooks/wh_all", "http://hooks/wh_failed"]


def test_attempts_are_logged_and_move_a_delivery_on(store: Store) -> None:
    _endpoint(store, "wh_1", A)
    batch_id, _ = batch_in(store, BatchStatus.CANCELLED)
    (due,) = store.claim_webhook_deliveries(NOW, 10, NOW + 60)
    store.record_webhook_attempt(due.id, WebhookAttempt(1, NOW, 500, 12, "HTTP 500"), NOW + 5, False)
    store.record_webhook_attempt(due.id, WebhookAttempt(1, NOW, 500, 12, "HTTP 500"), NOW + 5, False)  # replayed
    (delivery,) = store.list_webhook_deliveries("wh_1", A, 10)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.batch_id) == (
        DeliveryStatus.PENDING,
        1,
        NOW + 5,
        batch_id,
    )
    assert delivery.event_type == "batch.cancelled" and len(delivery.attempt_log) == 1
    assert store.claim_webhook_deliveries(NOW + 4, 10, NOW + 64) == []
    (again,) = store.claim_webhook_deliveries(NOW + 5, 10, NOW + 65)
    assert (again.id, again.attempts, again.event_id) == (due.id, 1, due.event_id), "the same event on a retry"
    store.record_webhook_attempt(due.id, WebhookAttempt(2, NOW + 5, None, 3, "ConnectError"), NOW + 300, False)
    store.record_webhook_attempt(due.id, WebhookAttempt(3, NOW + 300, 200, 7), None, True)
    (delivery,) = store.list_webhook_deliveries("wh_1", A, 10)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.last_attempt_at) == (
        DeliveryStatus.DELIVERED,
        3,
        None,
        NOW + 300,
    )
    assert [(a.attempt, a.status_code, a.error) for a in delivery.attempt_log] == [
        (1, 500, "HTTP 500"),
        (2, None, "ConnectError"),
        (3, 200, None),
    ]
    assert store.claim_webhook_deliveries(NOW + 10**6, 10, NOW + 10**6) == []
    assert store.list_webhook_deliveries("wh_1", B, 10) == []


def test_a_delivery_without_a_next_attempt_fails_for_good(store: Store) -> None:
    _endpoint(store, "wh_1", A)
    batch_in(store, BatchStatus.EXPIRED)
    (due,) = store.claim_webhook_deliveries(NOW, 10, NOW + 60)
    store.record_webhook_attempt(due.id, WebhookAttempt(8, NOW, 503, 4, "HTTP 503"), None, False)
    (delivery,) = store.list_webhook_deliveries("wh_1", A, 10)
    assert delivery.status == DeliveryStatus.FAILED and delivery.event_type == "batch.expired"
    assert store.claim_webhook_deliveries(NOW + 10**6, 10, NOW + 10**6) == []
    assert store.delete_webhook_endpoint("wh_1", A)
    assert store.list_webhook_deliveries("wh_1", A, 10) == []
    assert status(store, delivery.batch_id) == BatchStatus.EXPIRED
