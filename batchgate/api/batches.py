"""/v1/batches: create, retrieve, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from batchgate.api.bodies import JsonBody
from batchgate.api.convert import batch_list, batch_object
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import JSON_BODY_ERRORS, STORAGE_ERRORS, error_responses
from batchgate.api.ratelimit import show_pacing
from batchgate.app import Services
from batchgate.protocol import openai as wire

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=error_responses(401, 403, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]
BatchId = Annotated[str, Query(description="A batch id: the page starts after it.")]


@router.post("", response_model=wire.Batch, responses=error_responses(*JSON_BODY_ERRORS, 404, *STORAGE_ERRORS))
def create_batch(
    body: Annotated[wire.BatchCreate, Depends(JsonBody(wire.BatchCreate))], project: Project, svc: Svc
) -> wire.Batch:
    """Create a batch over an uploaded input file; it starts `validating`."""
    batch = svc.batches.create(
        project,
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
        output_expires_after=body.output_expires_after.seconds if body.output_expires_after else None,
    )
    return batch_object(batch)


@router.get("", response_model=wire.BatchList, responses=error_responses(400))
def list_batches(
    project: Project,
    svc: Svc,
    after: BatchId | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> wire.BatchList:
    """The project's batches, newest first."""
    return show_pacing(svc.store, batch_list(svc.batches.list(project, after, limit)))


@router.get("/{batch_id}", response_model=wire.Batch, responses=error_responses(404))
def retrieve_batch(batch_id: str, project: Project, svc: Svc) -> wire.Batch:
    return show_pacing(svc.store, batch_object(svc.batches.get(project, batch_id)))


@router.post("/{batch_id}/cancel", response_model=wire.Batch, responses=error_responses(404, 409))
def cancel_batch(batch_id: str, project: Project, svc: Svc) -> wire.Batch:
    """Cancel a batch: results already produced are kept."""
    return batch_object(svc.batches.cancel(project, batch_id))
