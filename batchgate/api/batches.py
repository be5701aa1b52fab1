"""/v1/batches: create, retrieve, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from batchgate.api.convert import batch_list, batch_object
from batchgate.api.deps import project_id, services
from batchgate.app import Services
from batchgate.core.errors import InvalidRequestError
from batchgate.protocol import openai as wire

router = APIRouter(prefix="/v1/batches", tags=["batches"])

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]


def _required_string(value: object, name: str) -> str:
    if value is None:
        raise InvalidRequestError(
            f"Missing required parameter '{name}'.", param=name, code="missing_required_parameter"
        )
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be a string.", param=name, code="invalid_type")
    return value


@router.post("", response_model=wire.Batch)
def create_batch(body: wire.BatchCreate, project: Project, svc: Svc) -> wire.Batch:
    batch = svc.batches.create(
        project,
        input_file_id=_required_string(body.input_file_id, "input_file_id"),
        endpoint=_required_string(body.endpoint, "endpoint"),
        completion_window=_required_string(body.completion_window, "completion_window"),
        metadata=body.metadata,
    )
    return batch_object(batch)


@router.get("", response_model=wire.BatchList)
def list_batches(project: Project, svc: Svc, after: str | None = None, limit: int = 20) -> wire.BatchList:
    return batch_list(svc.batches.list(project, after, limit))


@router.get("/{batch_id}", response_model=wire.Batch)
def retrieve_batch(batch_id: str, project: Project, svc: Svc) -> wire.Batch:
    return batch_object(svc.batches.get(project, batch_id))


@router.post("/{batch_id}/cancel", response_model=wire.Batch)
def cancel_batch(batch_id: str, project: Project, svc: Svc) -> wire.Batch:
    return batch_object(svc.batches.cancel(project, batch_id))
