"""The Responses API: POST /v1/responses (streamed or not), GET and DELETE of stored ones,
and their input items."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse

from batchgate.api.bodies import JsonBody
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import BACKEND_ERRORS, JSON_BODY_ERRORS, error_responses, event_stream
from batchgate.app import Services
from batchgate.core.errors import InvalidRequestError
from batchgate.protocol import responses as wire

router = APIRouter(prefix="/v1", tags=["responses"], responses=error_responses(401, 403, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]
Body = Annotated[wire.ResponseCreateRequest, Depends(JsonBody(wire.ResponseCreateRequest))]


@router.post(
    "/responses",
    response_model=wire.Response,
    responses={
        200: {
            "description": "With `stream: true`: OpenAI's response events (`event: <type>` + `data: {...}`), "
            "from `response.created` to `response.completed` (or `response.incomplete`); for a model "
            'served natively (`responses = "native"`), its upstream\'s own events, as it wrote them.',
            "content": event_stream(wire.StreamEvent),
        },
        **error_responses(*JSON_BODY_ERRORS, 404, *BACKEND_ERRORS),
    },
)
async def create_response(body: Body, project: Project, svc: Svc) -> wire.Response | JSONResponse | StreamingResponse:
    """A model response to text or a list of input items; with `stream: true`, OpenAI's events."""
    request = body.model_dump(exclude_unset=True, by_alias=True)
    if not body.stream:
        response = await svc.responses.create(project, request)
        # a native upstream's answer goes out as it wrote it (it may hold item types,
        # such as reasoning, that batchgate's own responses never do)
        return JSONResponse(response) if isinstance(response, dict) else response
    events = svc.responses.stream(project, request)
    first = await anext(events)  # a refusal is raised here, as an ordinary HTTP error

    async def sse() -> AsyncIterator[bytes]:
        event: dict[str, Any] | None = first
        while event is not None:
            yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            event = await anext(events, None)

    return StreamingResponse(sse(), media_type="text/event-stream")


@router.get("/responses/{response_id}", response_model=wire.Response, responses=error_responses(404))
async def get_response(response_id: str, project: Project, svc: Svc) -> JSONResponse:
    """A response created with `store: true`."""
    # as it was sent when created (a native upstream's may hold items batchgate's never do)
    return JSONResponse(await svc.responses.get(project, response_id))


@router.get(
    "/responses/{response_id}/input_items", response_model=wire.InputItemList, responses=error_responses(400, 404)
)
async def list_input_items(
    response_id: str,
    project: Project,
    svc: Svc,
    after: Annotated[str | None, Query(description="An input item id: the page starts after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    include: Annotated[list[str] | None, Query(description="Refused: no extra item data is kept.")] = None,
    include_brackets: Annotated[list[str] | None, Query(alias="include[]", include_in_schema=False)] = None,
) -> wire.InputItemList:
    """The input items of a stored response (`client.responses.input_items.list`), newest
    first unless `order=asc`."""
    if include or include_brackets:  # as the openai SDK sends it: include[]=...
        raise InvalidRequestError(
            "'include' is not supported: no extra item data is kept.", param="include", code="unsupported_parameter"
        )
    return await svc.responses.input_items(project, response_id, after, limit, order)


@router.delete("/responses/{response_id}", response_model=wire.ResponseDeleted, responses=error_responses(404))
async def delete_response(response_id: str, project: Project, svc: Svc) -> wire.ResponseDeleted:
    """Forget a stored response (responses that continue it keep their own copy)."""
    return await svc.responses.delete(project, response_id)
