"""Signed webhooks: per-project endpoints told when a batch ends, delivered from a
durable outbox.

The outbox: a store writes one event row (`batch.completed`, `batch.failed`,
`batch.expired`, `batch.cancelled`; OpenAI's event shape) and one delivery row per
endpoint of the batch's project subscribed to it, in the same transaction as the batch's
move to its final status, so a crash can neither lose an event nor write it twice.
Operation and agent batches end through the same moves and are announced alike.

Delivery: `WebhookDispatcher`, in every worker process, claims due deliveries (a claim
is a lease: a worker that dies mid-attempt leaves the delivery due again when the lease
ends), posts the event's body signed per Standard Webhooks, logs the attempt (status,
latency, error) and schedules the next one after a failure (not a 2xx answer, or no
answer) along `RETRY_SCHEDULE`, with jitter. The event id, the `webhook-id` header and
the body are the same on every attempt, so a receiver deduplicates on `webhook-id`;
`webhook-timestamp` is the attempt's time.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

from batchgate.core.clock import Clock, SystemClock
from batchgate.core.errors import InvalidRequestError, NotFoundError
from batchgate.core.ids import new_id
from batchgate.core.states import BatchStatus

if TYPE_CHECKING:
    from batchgate.core.ports import Store

log = logging.getLogger("batchgate.webhooks")

# the event a batch's final status announces (OpenAI's batch webhook event types)
EVENT_OF_STATUS: dict[BatchStatus, str] = {
    BatchStatus.COMPLETED: "batch.completed",
    BatchStatus.FAILED: "batch.failed",
    BatchStatus.EXPIRED: "batch.expired",
    BatchStatus.CANCELLED: "batch.cancelled",
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_OF_STATUS.values())

# Seconds to wait after a failed attempt before the next one: 8 attempts in all, the
# last about 27.6 hours after the first (Standard Webhooks' reference schedule:
# now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). Each wait gets ±20% jitter so that
# many deliveries to one endpoint that failed together do not come back together.
RETRY_SCHEDULE: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
RETRY_JITTER = 0.2
SECRET_PREFIX = "whsec_"


class DeliveryStatus:
    PENDING = "pending"  # an attempt is due at next_attempt_at
    DELIVERED = "delivered"  # an attempt got a 2xx answer
    FAILED = "failed"  # every attempt of the schedule failed


@dataclass(slots=True)
class WebhookEndpoint:
    id: str
    project_id: str
    url: str
    secret: str  # `whsec_<base64>`: shown once, when the endpoint is created
    events: tuple[str, ...]
    created_at: int
    description: str | None = None


@dataclass(slots=True)
class WebhookEvent:
    id: str
    project_id: str
    batch_id: str
    type: str
    created_at: int
    body: str  # the JSON posted on every attempt, byte for byte


@dataclass(slots=True)
class WebhookAttempt:
    attempt: int  # 1 for the first
    at: int
    status_code: int | None  # None: no answer (connection refused, timeout)
    latency_ms: int
    error: str | None = None


@dataclass(slots=True)
class WebhookDelivery:
    """One event to one endpoint, with the log of its attempts."""

    id: int
    event_id: str
    event_type: str
    batch_id: str
    endpoint_id: str
    status: str
    attempts: int
    next_attempt_at: int | None
    last_attempt_at: int | None
    created_at: int
    attempt_log: list[WebhookAttempt] = field(default_factory=list)


@dataclass(slots=True)
class DueDelivery:
    """A claimed delivery: what the next attempt posts, and where."""

    id: int
    event_id: str
    body: str
    attempts: int  # made so far
    url: str
    secret: str


def event_body(event_id: str, event_type: str, created_at: int, batch_id: str) -> str:
    """OpenAI's event shape: `{id, object: "event", type, created_at, data: {id}}`."""
    event = {"id": event_id, "object": "event", "type": event_type, "created_at": created_at, "data": {"id": batch_id}}
    return orjson.dumps(event).decode()


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """Standard Webhooks' `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed
    with the base64-decoded part of the secret after `whsec_`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


def next_delay(attempts: int, schedule: Sequence[float], jitter: float = RETRY_JITTER) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None when none is left."""
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * random.uniform(1 - jitter, 1 + jitter)


class WebhookSender(Protocol):
    """Posts one attempt; the answer's HTTP status. Raises on no answer (refused, timeout)."""

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int: ...
    async def aclose(self) -> None: ...


Db = Callable[..., Awaitable[Any]]  # runs a blocking store call off the event loop (the worker's `_db`)


class WebhookDispatcher:
    """Delivers due webhook attempts from the store; runs beside a worker's loop."""

    def __init__(
        self,
        store: Store,
        sender: WebhookSender,
        clock: Clock | None = None,
        schedule: Sequence[float] = RETRY_SCHEDULE,
        jitter: float = RETRY_JITTER,
        claim_size: int = 32,
        lease: int = 60,  # longer than the sender's timeout: an attempt never outlives its claim
        poll_interval: float = 1.0,
    ):
        self.store = store
        self.sender = sender
        self.clock = clock or SystemClock()
        self.schedule = tuple(schedule)
        self.jitter = jitter
        self.claim_size = claim_size
        self.lease = lease
        self.poll_interval = poll_interval

    async def run(self, stop: asyncio.Event, db: Db) -> None:
        """Deliver until `stop` is set."""
        while not stop.is_set():
            sent = 0
            try:
                sent = await self.deliver_due(db)
            except Exception:
                log.exception("webhook delivery failed; retrying")
            if sent < self.claim_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval)

    async def deliver_due(self, db: Db) -> int:
        """One round: claim the due deliveries, attempt each (concurrently), log them."""
        now = int(self.clock.time())
        due: list[DueDelivery] = await db(self.store.claim_webhook_deliveries, now, self.claim_size, now + self.lease)
        if due:
            await asyncio.gather(*(self._attempt(d, db) for d in due))
        return len(due)

    async def _attempt(self, delivery: DueDelivery, db: Db) -> None:
        at = int(self.clock.time())
        headers = signed_headers(delivery.secret, delivery.event_id, at, delivery.body)
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = await self.sender.post(delivery.url, delivery.body.encode(), headers)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempt = WebhookAttempt(
            delivery.attempts + 1, at, status_code, int((time.perf_counter() - started) * 1000), error
        )
        delivered = error is None
        delay = None if delivered else next_delay(attempt.attempt, self.schedule, self.jitter)
        next_at = None if delay is None else at + max(1, round(delay))
        await db(self.store.record_webhook_attempt, delivery.id, attempt, next_at, delivered)
        if not delivered:
            log.info(
                "webhook %s to %s: attempt %d failed (%s); %s",
                delivery.event_id,
                delivery.url,
                attempt.attempt,
                error,
                f"next at {next_at}" if next_at else "giving up",
            )


class WebhookService:
    """The webhook endpoints of a project, and their deliveries."""

    def __init__(self, store: Store, clock: Clock | None = None):
        self.store = store
        self.clock = clock or SystemClock()

    def create(
        self, project_id: str, url: str, events: list[str] | None = None, description: str | None = None
    ) -> WebhookEndpoint:
        """A new endpoint with a new secret (the only time the secret is returned)."""
        check_url(url)
        chosen = tuple(dict.fromkeys(events)) if events else EVENT_TYPES
        if unknown := [e for e in chosen if e not in EVENT_TYPES]:
            raise InvalidRequestError(
                f"Unknown event type {unknown[0]!r}; one of {', '.join(EVENT_TYPES)}.",
                param="events",
                code="invalid_value",
            )
        endpoint = WebhookEndpoint(
            new_id("wh_"), project_id, url, new_secret(), chosen, int(self.clock.time()), description
        )
        self.store.add_webhook_endpoint(endpoint)
        return endpoint

    def list(self, project_id: str) -> list[WebhookEndpoint]:
        return self.store.list_webhook_endpoints(project_id)

    def get(self, project_id: str, endpoint_id: str) -> WebhookEndpoint:
        endpoint = self.store.get_webhook_endpoint(endpoint_id, project_id)
        if endpoint is None:
            raise NotFoundError(f"No such webhook endpoint: {endpoint_id}", param="webhook_id")
        return endpoint

    def delete(self, project_id: str, endpoint_id: str) -> None:
        """Delete the endpoint; its pending deliveries are dropped with it."""
        if not self.store.delete_webhook_endpoint(endpoint_id, project_id):
            raise NotFoundError(f"No such webhook endpoint: {endpoint_id}", param="webhook_id")

    def deliveries(self, project_id: str, endpoint_id: str, limit: int = 20) -> builtins.list[WebhookDelivery]:
        """The endpoint's deliveries, newest first, each with its attempts."""
        self.get(project_id, endpoint_id)
        return self.store.list_webhook_deliveries(endpoint_id, project_id, limit)


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"A webhook URL must be an absolute http(s) URL, not {url[:100]!r}.", param="url", code="invalid_value"
        )
