"""Webhook endpoints and their deliveries (/v1/webhooks, an extension), and the event a
batch's end posts (OpenAI's batch webhook event shape)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WebhookEventType = Literal["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]


class WebhookCreate(BaseModel):
    """The body of POST /v1/webhooks."""

    model_config = ConfigDict(strict=True, extra="forbid")

    url: str = Field(description="An http(s) URL the events are POSTed to.", max_length=2048)
    events: list[WebhookEventType] | None = Field(None, description="The event types to send (default: all four).")
    description: str | None = Field(None, max_length=512)


class WebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str]
    description: str | None = None
    created_at: int
    secret: str | None = Field(
        None,
        description="`whsec_…`: the signing secret, returned only by the create call. Verify each "
        "delivery's `webhook-signature` with it (Standard Webhooks; the openai client's "
        "`client.webhooks.unwrap(body, headers, secret=...)`).",
    )


class WebhookEndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookEndpoint]


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookAttempt(BaseModel):
    attempt: int
    at: int
    status_code: int | None = Field(None, description="The receiver's HTTP status; null when it gave no answer.")
    latency_ms: int
    error: str | None = None


class WebhookDelivery(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event_id: str = Field(description="The event's id: the `webhook-id` header, the same on every attempt.")
    event_type: str
    batch_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: int | None = None
    last_attempt_at: int | None = None
    created_at: int
    attempt_log: list[WebhookAttempt]


class WebhookDeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookDelivery]


class EventData(BaseModel):
    id: str


class WebhookEvent(BaseModel):
    """What a delivery POSTs: OpenAI's `{id, object: "event", type, created_at, data: {id}}`."""

    id: str
    object: Literal["event"] = "event"
    type: WebhookEventType
    created_at: int
    data: EventData
