"""Webhook delivery on the fakes: the schedule, retries with a stable event id, the
signature as the official verifiers check it, and the outbox written by a batch's end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import standardwebhooks
from openai import OpenAI

from batchgate.core.models import BatchRecord, BatchStatus
from batchgate.core.webhooks import (
    RETRY_SCHEDULE,
    DeliveryStatus,
    WebhookDispatcher,
    WebhookService,
    next_delay,
    signature,
)
from batchgate.testing import FakeClock, InMemoryStore

NOW = 1_800_000_000


class FlakyReceiver:
    """Answers 500 `failures` times, then 200; keeps what it was sent."""

    def __init__(self, failures: int = 2):
        self.failures = failures
        self.received: list[tuple[bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.received.append((body, headers))
        return 500 if len(self.received) <= self.failures else 200

    async def aclose(self) -> None:
        pass


async def _db(call: Any, *args: Any) -> Any:
    return call(*args)


def _finished_batch(store: InMemoryStore, status: BatchStatus = BatchStatus.COMPLETED) -> str:
    from batchgate.core.models import FileRecord

    store.add_file(FileRecord("file-1", "proj_a", "batch", "in.jsonl", 10, NOW))
    batch = BatchRecord(
        "batch_1", "proj_a", "/v1/chat/completions", "file-1", "24h", BatchStatus.VALIDATING, NOW, NOW + 86400
    )
    assert store.add_batch(batch)
    job = store.claim_batch_job("w", NOW)
    assert job is not None
    assert store.start_batch("batch_1", 0, NOW, "w")
    store.release_batch_job("batch_1", "w", 0)
    assert store.request_cancel("batch_1", NOW)
    job = store.claim_batch_job("w", NOW)
    assert job is not None
    assert store.finish_batch("batch_1", "w", BatchStatus.CANCELLED, [], None, None, 0, 0, NOW)
    return "batch_1"


def test_the_schedule_spans_more_than_a_day_with_jitter() -> None:
    assert sum(RETRY_SCHEDULE) >= 24 * 3600
    assert len(RETRY_SCHEDULE) + 1 == 8  # attempts in all
    delays = [next_delay(1, RETRY_SCHEDULE) for _ in range(200)]
    assert all(d is not None and 4.0 <= d <= 6.0 for d in delays) and len(set(delays)) > 1
    assert next_delay(len(RETRY_SCHEDULE) + 1, RETRY_SCHEDULE) is None


def test_a_receiver_that_fails_twice_gets_the_same_event_three_times_signed() -> None:
    store, clock = InMemoryStore(), FakeClock(NOW)
    hook = WebhookService(store, clock).create("proj_a", "http://receiver/hook")
    assert hook.secret.startswith("whsec_")
    batch_id = _finished_batch(store)
    receiver = FlakyReceiver(failures=2)
    dispatcher = WebhookDispatcher(store, receiver, clock, schedule=(5, 300), jitter=0.0)

    async def rounds() -> list[int]:
        sent = [await dispatcher.deliver_due(_db)]
        clock.advance(4)
        sent.append(await dispatcher.deliver_due(_db))  # not due yet: 5 s after the first
        clock.advance(1)
        sent.append(await dispatcher.deliver_due(_db))
        clock.advance(300)
        sent.append(await dispatcher.deliver_due(_db))
        clock.advance(10**6)
        sent.append(await dispatcher.deliver_due(_db))
        return sent

    assert asyncio.run(rounds()) == [1, 0, 1, 1, 0]
    bodies = {body for body, _ in receiver.received}
    ids = {headers["webhook-id"] for _, headers in receiver.received}
    assert len(bodies) == 1 and len(ids) == 1, "the event and its id are the same on every attempt"
    event = json.loads(bodies.pop())
    assert event["id"] == ids.pop() and event["type"] == "batch.cancelled" and event["data"] == {"id": batch_id}
    (delivery,) = store.list_webhook_deliveries(hook.id, "proj_a", 10)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert [(a.attempt, a.at, a.status_code) for a in delivery.attempt_log] == [
        (1, NOW, 500),
        (2, NOW + 5, 500),
        (3, NOW + 305, 200),
    ]


def test_the_signature_verifies_with_standardwebhooks_and_the_openai_client() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = json.dumps(
        {"id": "evt_1", "object": "event", "type": "batch.completed", "created_at": 1, "data": {"id": "batch_1"}}
    )
    import time

    now = int(time.time())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature(secret, "evt_1", now, body),
    }
    standardwebhooks.Webhook(secret).verify(body, headers)
    event = OpenAI(api_key="unused", base_url="http://127.0.0.1:9").webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "batch.completed" and event.data.id == "batch_1"
    headers["webhook-signature"] = signature("whsec_" + "A" * 32, "evt_1", now, body)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body, headers)


def test_a_receiver_that_never_answers_is_given_up_after_the_schedule() -> None:
    store, clock = InMemoryStore(), FakeClock(NOW)
    hook = WebhookService(store, clock).create("proj_a", "http://receiver/hook", ["batch.cancelled"])
    _finished_batch(store)
    receiver = FlakyReceiver(failures=100)
    dispatcher = WebhookDispatcher(store, receiver, clock, schedule=(1, 1), jitter=0.0)

    async def drain() -> None:
        for _ in range(5):
            await dispatcher.deliver_due(_db)
            clock.advance(1)

    asyncio.run(drain())
    (delivery,) = store.list_webhook_deliveries(hook.id, "proj_a", 10)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert len(receiver.received) == 3
