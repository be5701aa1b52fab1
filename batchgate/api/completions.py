"""Synchronous endpoints on the batch backend: chat and text completions, embeddings, models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

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


async def _answer(svc: Services, url: str, body: Any) -> dict[str, Any] | StreamingResponse:
    if not (isinstance(body, dict) and body.get("stream")):
        return await svc.completions.complete(url, body)
    chunks = svc.completions.stream(url, body)
    first = await anext(chunks)  # a refusal is raised here, as an ordinary HTTP error

    async def events() -> AsyncIterator[bytes]:
        yield b"data: " + orjson.dumps(first) + b"\n\n"
        async for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, project: Project, svc: Svc) -> dict[str, Any] | StreamingResponse:
    """A chat completion; with `stream: true`, OpenAI's server-sent events."""
    return await _answer(svc, "/v1/chat/completions", await _json(request))


@router.post("/completions", response_model=None)
async def completions(request: Request, project: Project, svc: Svc) -> dict[str, Any] | StreamingResponse:
    """A text completion; with `stream: true`, OpenAI's server-sent events."""
    return await _answer(svc, "/v1/completions", await _json(request))


@router.post("/embeddings")
async def embeddings(request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    """Embeddings of one input or an array of inputs."""
    return await svc.completions.complete("/v1/embeddings", await _json(request))


@router.get("/models")
def list_models(project: Project, svc: Svc) -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "batchgate"} for name in svc.completions.models()]
    return {"object": "list", "data": data}
