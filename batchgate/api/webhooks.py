"""/v1/webhooks (an extension): endpoints told when a batch ends, and their deliveries."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from batchgate.api.bodies import JsonBody
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import JSON_BODY_ERRORS, STORAGE_ERRORS, error_responses
from batchgate.app import Services
from batchgate.core import webhooks as core
from batchgate.protocol import webhooks as wire

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=error_responses(401, 403, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]


def endpoint_object(e: core.WebhookEndpoint, with_secret: bool = False) -> wire.WebhookEndpoint:
    return wire.WebhookEndpoint(
        id=e.id,
        url=e.url,
        events=list(e.events),
        description=e.description,
        created_at=e.created_at,
        secret=e.secret if with_secret else None,
    )


def delivery_object(d: core.WebhookDelivery) -> wire.WebhookDelivery:
    return wire.WebhookDelivery(
        id=f"whd_{d.id}",
        event_id=d.event_id,
        event_type=d.event_type,
        batch_id=d.batch_id,
        status=d.status,  # type: ignore[arg-type]
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_attempt_at=d.last_attempt_at,
        created_at=d.created_at,
        attempt_log=[wire.WebhookAttempt(**asdict(a)) for a in d.attempt_log],
    )


@router.post("", response_model=wire.WebhookEndpoint, responses=error_responses(*JSON_BODY_ERRORS, *STORAGE_ERRORS))
def create_webhook(
    body: Annotated[wire.WebhookCreate, Depends(JsonBody(wire.WebhookCreate))], project: Project, svc: Svc
) -> wire.WebhookEndpoint:
    """Add an endpoint; the answer holds its `whsec_` signing secret, shown this once."""
    endpoint = svc.webhooks.create(project, body.url, list(body.events or []), body.description)
    return endpoint_object(endpoint, with_secret=True)


@router.get("", response_model=wire.WebhookEndpointList)
def list_webhooks(project: Project, svc: Svc) -> wire.WebhookEndpointList:
    """The project's endpoints, oldest first (without their secrets)."""
    return wire.WebhookEndpointList(data=[endpoint_object(e) for e in svc.webhooks.list(project)])


@router.get("/{webhook_id}", response_model=wire.WebhookEndpoint, responses=error_responses(404))
def retrieve_webhook(webhook_id: str, project: Project, svc: Svc) -> wire.WebhookEndpoint:
    return endpoint_object(svc.webhooks.get(project, webhook_id))


@router.delete(
    "/{webhook_id}", response_model=wire.WebhookEndpointDeleted, responses=error_responses(404, *STORAGE_ERRORS)
)
def delete_webhook(webhook_id: str, project: Project, svc: Svc) -> wire.WebhookEndpointDeleted:
    """Delete the endpoint; its pending deliveries are dropped."""
    svc.webhooks.delete(project, webhook_id)
    return wire.WebhookEndpointDeleted(id=webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=wire.WebhookDeliveryList, responses=error_responses(400, 404))
def list_deliveries(
    webhook_id: str, project: Project, svc: Svc, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> wire.WebhookDeliveryList:
    """The endpoint's deliveries, newest first, each with the log of its attempts."""
    deliveries = svc.webhooks.deliveries(project, webhook_id, limit)
    return wire.WebhookDeliveryList(data=[delivery_object(d) for d in deliveries])
