"""Extensions of /v1/batches: pause, resume, and retry the failed lines of a finished batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from batchgate.api.convert import batch_object
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import STORAGE_ERRORS, error_responses
from batchgate.app import Services
from batchgate.protocol import openai as wire

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=error_responses(401, 403, 404, 409, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]


@router.post("/{batch_id}/pause", response_model=wire.Batch, responses=error_responses(*STORAGE_ERRORS))
def pause_batch(batch_id: str, project: Project, svc: Svc) -> wire.Batch:
    """Extension: stop starting the batch's lines (running ones finish). It keeps its status
    and gets `paused_at`; its completion window keeps running. 409 unless it is
    validating or in_progress."""
    return batch_object(svc.lifecycle.pause(project, batch_id))


@router.post("/{batch_id}/resume", response_model=wire.Batch, responses=error_responses(*STORAGE_ERRORS))
def resume_batch(batch_id: str, project: Project, svc: Svc) -> wire.Batch:
    """Extension: run a paused batch's lines again. 409 unless it is validating or in_progress."""
    return batch_object(svc.lifecycle.resume(project, batch_id))


@router.post("/{batch_id}/retry", response_model=wire.Batch, responses=error_responses(*STORAGE_ERRORS))
def retry_batch(batch_id: str, project: Project, svc: Svc) -> wire.Batch:
    """Extension: a new batch of the lines of a finished batch that did not succeed (its
    error file's lines), with the same custom_ids; `metadata.retry_of` on the new batch,
    `metadata.retried_by` on this one. 409 if the batch is not finished, has no failed
    lines, was retried already, or is an operation or agent batch."""
    return batch_object(svc.lifecycle.retry(project, batch_id))
