"""Synchronous endpoints on the batch backend: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError

from batchgate.api.deps import project_id, services
from batchgate.app import Services

router = APIRouter(prefix="/v1", tags=["completions"])

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "invalid JSON"}]) from None


@router.post("/chat/completions")
async def chat_completions(request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    return await svc.completions.complete("/v1/chat/completions", await _json(request))


@router.post("/completions")
async def completions(request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    return await svc.completions.complete("/v1/completions", await _json(request))


@router.get("/models")
def list_models(project: Project, svc: Svc) -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "batchgate"} for name in svc.completions.models()]
    return {"object": "list", "data": data}
