"""The Swarms-compatible agent API: `/v1/agent/...`, `/v1/swarm/...` and the lookups the
official `swarms-client` makes (`/v1/models/available`, `/v1/swarms/available`,
`/v1/rate/limits`, `/v1/swarm/logs`).

A batch POST waits for the batch to end and answers with every result (as Swarms clients
expect); with `Prefer: respond-async` (or `?wait=false`) it answers 202 with the batch id
at once. An `Idempotency-Key` header makes a resent POST answer the batch the first one
created. Either way the batch is durable: a dropped connection loses nothing, and
`GET .../batch/completions/{batch_id}` answers with the same shape.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from batchgate.api.deps import json_object, project_id, services
from batchgate.api.errors import invalid_json
from batchgate.api.nesting import check_nesting
from batchgate.api.openapi import BACKEND_ERRORS, JSON_BODY_ERRORS, REF, error_responses, model_schema
from batchgate.app import Services
from batchgate.core.agents.activity import WINDOWS, agent_logs, request_counts
from batchgate.core.agents.runs import AgentRuns
from batchgate.core.errors import InvalidRequestError
from batchgate.core.models import BatchRecord
from batchgate.core.ratelimit import Limiter
from batchgate.protocol.agents import (
    SWARM_TYPES,
    AgentBatchList,
    AgentBatchResponse,
    AgentCompletion,
    AgentCompletionResponse,
    AsyncBatchAccepted,
    LogEntry,
    ModelsAvailable,
    RateLimits,
    RateWindow,
    SwarmBatchResponse,
    SwarmCompletionResponse,
    SwarmLogs,
    SwarmsAvailable,
    SwarmSpec,
)

router = APIRouter(prefix="/v1", tags=["agents"], responses=error_responses(401, 403, 500))

# the bodies are read (and their records parsed one by one) by hand, so that one bad record
# fails only itself: documented here instead of by FastAPI


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _array_of(model: type[BaseModel]) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": REF.format(model=model.__name__)}}


ANSWERED = error_responses(*JSON_BODY_ERRORS, *BACKEND_ERRORS)
BATCH_ERRORS = error_responses(*JSON_BODY_ERRORS, 413, *BACKEND_ERRORS)
FOUND = error_responses(400, 404)
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "With `Prefer: respond-async` or `?wait=false`: the batch id, at once.",
        "model": AsyncBatchAccepted,
    }
}

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]


# ---- agents ---------------------------------------------------------------------------


@router.post("/agent/completions", responses=ANSWERED, openapi_extra=_body(model_schema(AgentCompletion)))
async def agent_completion(request: Request, project: Project, svc: Svc) -> AgentCompletionResponse:
    completion = svc.agents.parse_agent(await json_object(request))
    return await svc.agents.complete(completion)


@router.post(
    "/agent/batch/completions",
    response_model=None,
    responses={200: {"model": AgentBatchResponse}, **ACCEPTED, **BATCH_ERRORS},
    openapi_extra=_body(_array_of(AgentCompletion)),
)
async def agent_batch(request: Request, project: Project, svc: Svc, wait: bool = True) -> Any:
    return await _submit(request, project, svc, "agent", wait)


@router.get("/agent/batch/completions")
def list_agent_batches(project: Project, svc: Svc, after: str | None = None, limit: int = 20) -> AgentBatchList:
    """The project's agent batches, newest first (progress only; `after`: the last id of
    the previous page)."""
    batches, has_more, last = svc.agents.list_batches(project, "agent", after, limit)
    return AgentBatchList(data=[svc.agents.summary(b) for b in batches], has_more=has_more, last_id=last)


@router.get("/agent/batch/completions/{batch_id}", responses=FOUND)
def agent_batch_status(batch_id: str, project: Project, svc: Svc) -> AgentBatchResponse:
    return _full(svc.agents, project, svc.agents.get(project, batch_id, "agent"))  # type: ignore[return-value]


@router.post("/agent/batch/completions/{batch_id}/cancel", responses={**FOUND, **error_responses(409)})
def cancel_agent_batch(batch_id: str, project: Project, svc: Svc) -> AgentBatchResponse:
    """Cancels; results already produced are kept, the other records fail `batch_cancelled`."""
    return svc.agents.summary(svc.agents.cancel(project, batch_id, "agent"))


# ---- swarms ---------------------------------------------------------------------------


@router.post("/swarm/completions", responses=ANSWERED, openapi_extra=_body(model_schema(SwarmSpec)))
async def swarm_completion(request: Request, project: Project, svc: Svc) -> SwarmCompletionResponse:
    swarm = svc.agents.parse_swarm(await json_object(request))
    return await svc.agents.swarm(swarm)


@router.post(
    "/swarm/batch/completions",
    response_model=None,
    responses={
        200: {"content": {"application/json": {"schema": _array_of(SwarmCompletionResponse)}}},
        **ACCEPTED,
        **BATCH_ERRORS,
    },
    openapi_extra=_body(_array_of(SwarmSpec)),
)
async def swarm_batch(request: Request, project: Project, svc: Svc, wait: bool = True) -> Any:
    """Waits, then answers with the list of swarm results (the Swarms shape)."""
    return await _submit(request, project, svc, "swarm", wait)


@router.get("/swarm/batch/completions/{batch_id}", responses=FOUND)
def swarm_batch_status(batch_id: str, project: Project, svc: Svc) -> SwarmBatchResponse:
    return _full(svc.agents, project, svc.agents.get(project, batch_id, "swarm"))  # type: ignore[return-value]


@router.post("/swarm/batch/completions/{batch_id}/cancel", responses={**FOUND, **error_responses(409)})
def cancel_swarm_batch(batch_id: str, project: Project, svc: Svc) -> SwarmBatchResponse:
    summary = svc.agents.summary(svc.agents.cancel(project, batch_id, "swarm"))
    return SwarmBatchResponse.model_validate(summary.model_dump())


# ---- what the swarms-client looks up ----------------------------------------------------


@router.get("/models/available")
def models_available(project: Project, svc: Svc) -> ModelsAvailable:
    return ModelsAvailable(models=svc.backend.models())


@router.get("/swarms/available")
def swarms_available(project: Project) -> SwarmsAvailable:
    return SwarmsAvailable(swarms=list(SWARM_TYPES))


@router.get("/rate/limits")
def rate_limits(request: Request, project: Project, svc: Svc) -> RateLimits:
    """Requests accepted per window (minute, hour, day), with the calling key's `requests`
    limit over that window where it has one (what is left of it now, and when all of it
    is free again); null where the key sets none. The limits are rolling (core/ratelimit.py),
    so `reset_time` is when the window would be empty, not a fixed reset instant."""
    counts = request_counts(svc.batches, project)
    now = time.time()
    key = getattr(request.state, "api_key", None)
    states = (
        {s.limit.window_s: s for s in Limiter(svc.store).states(key, now) if s.limit.kind == "requests"} if key else {}
    )
    windows = {}
    for name, seconds in WINDOWS.items():
        state = states.get(seconds)
        windows[name] = RateWindow(
            count=counts[name],
            limit=state.limit.limit if state else None,
            remaining=state.remaining if state else None,
            exceeded=state is not None and state.remaining == 0,
            reset_time=_iso(now + (state.reset_s if state else seconds)),
        )
    return RateLimits(rate_limits=windows, timestamp=_iso(now))


@router.get("/swarm/logs")
def swarm_logs(project: Project, svc: Svc) -> SwarmLogs:
    """The project's latest agent and swarm batches (synchronous single completions are
    not logged)."""
    logs = []
    for batch in agent_logs(svc.batches, project):
        summary = svc.agents.summary(batch)
        data = {"action": f"{batch.source}_batch", **summary.model_dump(exclude={"results"})}
        logs.append(LogEntry(id=batch.id, api_key="redacted", data=data, created_at=_iso(batch.created_at)))
    return SwarmLogs(count=len(logs), logs=logs)


# ---- helpers ----------------------------------------------------------------------------


async def _submit(request: Request, project: str, svc: Services, kind: str, wait: bool) -> Any:
    try:
        raws = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise invalid_json(str(exc)) from None
    check_nesting(raws)
    if not isinstance(raws, list):
        raise InvalidRequestError(
            "The request body must be a JSON array of completions.", param="body", code="invalid_type"
        )
    svc.agents.check_size(len(raws))
    batch = await svc.agents.submit(project, kind, raws, request.headers.get("idempotency-key"))
    if not wait or "respond-async" in request.headers.get("prefer", ""):
        accepted = AsyncBatchAccepted(batch_id=batch.id, status="queued", total_requests=len(raws))
        return JSONResponse(
            accepted.model_dump(), status_code=202, headers={"Location": f"{request.url.path}/{batch.id}"}
        )
    batch = await _wait(request, svc.agents, project, batch)
    full = await run_in_threadpool(_full, svc.agents, project, batch)
    return full.results if kind == "swarm" else full  # Swarms answers a swarm batch with a list


async def _wait(request: Request, agents: AgentRuns, project: str, batch: BatchRecord) -> BatchRecord:
    """Polls the store until the batch ends. A client that hangs up stops the polling,
    not the batch."""
    delay = 0.05
    while not agents.ended(batch):
        if await request.is_disconnected():
            return batch
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 1.0)
        batch = await run_in_threadpool(agents.get, project, batch.id, batch.source)
    return batch


def _full(agents: AgentRuns, project: str, batch: BatchRecord) -> AgentBatchResponse | SwarmBatchResponse:
    summary = agents.summary(batch).model_dump()
    results = agents.results(project, batch) if agents.ended(batch) else []
    model = SwarmBatchResponse if batch.source == "swarm" else AgentBatchResponse
    return model.model_validate({**summary, "results": results})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
