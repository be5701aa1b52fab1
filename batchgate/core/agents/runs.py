"""`AgentRuns`: agent and swarm completions, one now or many as a durable batch.

A batch of agent completions (or of swarms) is compiled into two files, like an
operation batch: the records (`{"name", "description", ..., "error"}` per record, for the
response) and an ordinary OpenAI batch input file, one `/v1/chat/completions` line per
runnable record with custom_id `agent-0000000`, … It then runs through the same state
machine, worker, crash safety, cancel, expiry, usage and cost as any other batch; a
dropped connection loses nothing, and the response is rebuilt from the result files.
A record that cannot run (no task, an unknown model, a bad field) gets no line and is
answered `success: false` with its error; it never fails the other records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from batchgate.core.agents.activity import recent_batches
from batchgate.core.agents.backend import TURNS_FIELD, run_agent
from batchgate.core.agents.compile import CHAT, agent_body, prompt_request_body, swarm_body
from batchgate.core.agents.swarms import run_swarm
from batchgate.core.batches import BatchService
from batchgate.core.errors import BackendError, BackendRejectedError, InvalidRequestError, PayloadTooLargeError
from batchgate.core.files import FileService
from batchgate.core.ids import new_id
from batchgate.core.models import BatchRecord, BatchStatus, FilePurpose
from batchgate.core.ports import Backend, BackendRequest, BackendResponse
from batchgate.protocol.agents import (
    SWARM_TYPES,
    AgentBatchResponse,
    AgentCompletion,
    AgentCompletionResponse,
    AgentSpec,
    SwarmCompletionResponse,
    SwarmSpec,
)

log = logging.getLogger("batchgate.agents")

ID_WIDTH = 7
ENDED = (BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.EXPIRED, BatchStatus.FAILED)
KINDS = ("agent", "swarm")


def record_id(index: int) -> str:
    return f"agent-{index:0{ID_WIDTH}d}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class AgentRuns:
    def __init__(
        self,
        files: FileService,
        batches: BatchService,
        backend: Backend,
        model_problem: Callable[[str], str | None],
        max_batch: int = 1000,
    ):
        self.files = files
        self.batches = batches
        self.backend = backend
        self.model_problem = model_problem
        self.max_batch = max_batch

    # ---- parsing ---------------------------------------------------------------------

    def parse_agent(self, raw: object, where: str = "body") -> AgentCompletion:
        completion = _parse(AgentCompletion, raw, where)
        self._check_agent(completion.agent_config, f"{where}.agent_config")
        _warn_unknown(completion, where)
        return completion

    def parse_swarm(self, raw: object, where: str = "body") -> SwarmSpec:
        swarm = _parse(SwarmSpec, raw, where)
        if swarm.swarm_type not in SWARM_TYPES:
            raise InvalidRequestError(
                f"Unsupported swarm_type {swarm.swarm_type!r}; supported: {', '.join(SWARM_TYPES)}.",
                param=f"{where}.swarm_type",
                code="unsupported_swarm_type",
            )
        for i, agent in enumerate(swarm.agents):
            self._check_agent(agent, f"{where}.agents[{i}]")
        _warn_unknown(swarm, where)
        return swarm

    def _check_agent(self, spec: AgentSpec, where: str) -> None:
        if (problem := self.model_problem(spec.model_name)) is not None:
            raise InvalidRequestError(problem, param=f"{where}.model_name", code="model_not_found")
        _warn_unknown(spec, where)

    # ---- one completion, now ----------------------------------------------------------

    async def complete(self, completion: AgentCompletion) -> AgentCompletionResponse:
        """One agent completion, served ahead of batch lines; a model error is the
        response's `error` (success: false), as in a batch."""
        job_id = new_id("agent-")
        prompts = await self.system_prompts([completion.agent_config])
        body = agent_body(completion, prompts.get(_prompt_key(completion.agent_config)))
        loops = body.pop("batchgate_agent", {}).get("max_loops", 1)
        run = await run_agent(
            self.backend, BackendRequest(job_id, CHAT, body, interactive=True), loops
        )  # 5xx: BackendError
        spec = completion.agent_config
        if run.failure is not None:
            return _agent_result(
                job_id, spec_fields(spec), None, _error_of(run.failure), run.input_tokens, run.output_tokens, run.cost
            )
        return _agent_result(job_id, spec_fields(spec), run.turns, None, run.input_tokens, run.output_tokens, run.cost)

    async def swarm(self, swarm: SwarmSpec) -> SwarmCompletionResponse:
        job_id = new_id("swarm-")
        started = time.time()
        swarm = await self._with_prompts(swarm)
        try:
            request = BackendRequest(job_id, CHAT, {}, interactive=True)
            response = await run_swarm(self.backend, request, swarm_body(swarm)["batchgate_swarm"])
        except BackendRejectedError as exc:  # an agent's error answer: the swarm failed, with it
            response = exc.response
        return _swarm_result(
            job_id, swarm_fields(swarm), response.status_code, response.body, None, response.cost, time.time() - started
        )

    async def system_prompts(self, specs: list[AgentSpec]) -> dict[tuple[str, ...], str]:
        """A generated system prompt for each distinct agent asking for one: once per
        batch, not once per record."""
        wanted = {_prompt_key(s): s for s in specs if s.auto_generate_prompt}
        prompts: dict[tuple[str, ...], str] = {}
        for key, spec in wanted.items():
            request = BackendRequest(new_id("prompt-"), CHAT, prompt_request_body(spec), interactive=True)
            response = await self.backend.execute(request)  # BackendError: a 5xx
            if response.status_code != 200:
                message = _error_of(response)["message"]
                raise BackendError(
                    f"Could not generate the system prompt of {spec.agent_name!r}: {message}",
                    code="prompt_generation_failed",
                )
            prompts[key] = str(response.body["choices"][0]["message"].get("content") or "").strip()
        return prompts

    async def _with_prompts(self, swarm: SwarmSpec) -> SwarmSpec:
        prompts = await self.system_prompts(swarm.agents)
        agents = [
            a.model_copy(update={"system_prompt": prompts[_prompt_key(a)], "auto_generate_prompt": False})
            if a.auto_generate_prompt
            else a
            for a in swarm.agents
        ]
        return swarm.model_copy(update={"agents": agents})

    # ---- batches ---------------------------------------------------------------------

    def check_size(self, count: int) -> None:
        if count > self.max_batch:
            raise PayloadTooLargeError(
                f"{count} records is more than the {self.max_batch} one batch takes "
                f"(BATCHGATE_MAX_AGENT_BATCH); send them in chunks of at most {self.max_batch}.",
                param="body",
                code="too_many_records",
            )

    async def submit(
        self, project_id: str, kind: str, raws: list[Any], idempotency_key: str | None = None
    ) -> BatchRecord:
        """Compile the records into an ordinary batch (see the module doc) and create it.
        A repeated `idempotency_key` (within a day) answers the batch it created first, so a
        client that lost the answer can send the same chunk again without running it twice."""
        if idempotency_key and (earlier := await asyncio.to_thread(self._find, project_id, kind, idempotency_key)):
            return earlier
        if not raws:
            raise InvalidRequestError("The request body must be a non-empty JSON array.", param="body")
        self.check_size(len(raws))
        parsed: list[AgentCompletion | SwarmSpec | InvalidRequestError] = []
        for i, raw in enumerate(raws):
            try:
                parsed.append(
                    self.parse_agent(raw, f"body[{i}]") if kind == "agent" else self.parse_swarm(raw, f"body[{i}]")
                )
            except InvalidRequestError as exc:
                parsed.append(exc)
        runnable = [p for p in parsed if not isinstance(p, InvalidRequestError)]
        if not runnable:
            first = next(p for p in parsed if isinstance(p, InvalidRequestError))
            raise InvalidRequestError(
                f"No record can run; the first: {first.message}", param=first.param, code=first.code
            )
        prompts = await self.system_prompts([p.agent_config for p in runnable if isinstance(p, AgentCompletion)])
        lines: list[tuple[int, dict[str, Any] | None, dict[str, Any]]] = []
        for i, p in enumerate(parsed):
            if isinstance(p, InvalidRequestError):
                lines.append((i, None, _invalid_fields(raws[i], kind, p)))
            elif isinstance(p, AgentCompletion):
                lines.append((i, agent_body(p, prompts.get(_prompt_key(p.agent_config))), spec_fields(p.agent_config)))
            else:
                swarm = await self._with_prompts(p)
                lines.append((i, swarm_body(swarm), swarm_fields(swarm)))
        return await asyncio.to_thread(self._create, project_id, kind, lines, idempotency_key)

    def _find(self, project_id: str, kind: str, idempotency_key: str) -> BatchRecord | None:
        for batch in recent_batches(self.batches, project_id, int(time.time()) - 86400, source=kind):
            if (batch.operation or {}).get("idempotency_key") == idempotency_key:
                return batch
        return None

    def _create(
        self,
        project_id: str,
        kind: str,
        lines: list[tuple[int, dict[str, Any] | None, dict[str, Any]]],
        idempotency_key: str | None,
    ) -> BatchRecord:
        with self.files.upload(project_id) as kept, self.files.upload(project_id) as requests:
            for index, body, fields in lines:
                kept.write(orjson.dumps(fields) + b"\n")
                if body is not None:
                    line = {"custom_id": record_id(index), "method": "POST", "url": CHAT, "body": body}
                    requests.write(orjson.dumps(line) + b"\n")
            records_file = kept.commit(FilePurpose.BATCH.value, f"{kind}-records.jsonl")
            input_file = requests.commit(FilePurpose.BATCH.value, "requests.jsonl")
        spec: dict[str, Any] = {"kind": kind, "records_file_id": records_file.id, "records": len(lines)}
        if idempotency_key:
            spec["idempotency_key"] = idempotency_key
        return self.batches.create(project_id, input_file.id, CHAT, "24h", None, operation=spec, source=kind)

    def get(self, project_id: str, batch_id: str, kind: str) -> BatchRecord:
        batch = self.batches.get(project_id, batch_id)
        if batch.source != kind:
            raise InvalidRequestError(
                f"Batch {batch_id} is not {'an agent' if kind == 'agent' else 'a swarm'} batch; "
                f"read it with GET /v1/batches/{batch_id}.",
                param="batch_id",
            )
        return batch

    def cancel(self, project_id: str, batch_id: str, kind: str) -> BatchRecord:
        self.get(project_id, batch_id, kind)
        return self.batches.cancel(project_id, batch_id)

    def list_batches(
        self, project_id: str, kind: str, after: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool, str | None]:
        """The project's batches of this kind, newest first; `after`: the last id of the previous page."""
        page = self.batches.list(project_id, after, limit, source=kind)
        return page.data, page.has_more, page.data[-1].id if page.data else None

    @staticmethod
    def ended(batch: BatchRecord) -> bool:
        return batch.status in ENDED

    def summary(self, batch: BatchRecord) -> AgentBatchResponse:
        """The batch's progress, without results."""
        assert batch.operation is not None
        total = int(batch.operation["records"])
        invalid = total - batch.total if batch.status != BatchStatus.VALIDATING else 0
        never_ran = 0
        if batch.status in (BatchStatus.CANCELLED, BatchStatus.EXPIRED, BatchStatus.FAILED) and batch.total == 0:
            invalid, never_ran = 0, total  # ended before validation read its lines
        failed = batch.failed + invalid + never_ran
        ended_at = batch.completed_at or batch.cancelled_at or batch.expired_at or batch.failed_at
        return AgentBatchResponse(
            batch_id=batch.id,
            status={"validating": "queued"}.get(batch.status.value, batch.status.value),  # type: ignore[arg-type]
            total_requests=total,
            completed_requests=batch.completed,
            failed_requests=failed,
            execution_time=float((ended_at or int(time.time())) - batch.created_at),
            timestamp=iso(ended_at or batch.created_at),
        )

    def results(self, project_id: str, batch: BatchRecord) -> list[dict[str, Any]]:
        """Every record's result in input order (the batch has ended)."""
        assert batch.operation is not None
        entries = {e["custom_id"]: e for e in self._entries(project_id, batch)}
        ended = self.summary(batch).timestamp  # when the batch ended: results carry no time of their own
        code = {BatchStatus.CANCELLED: "batch_cancelled", BatchStatus.EXPIRED: "batch_expired"}.get(
            batch.status, "batch_failed"
        )
        out = []
        for index, raw in enumerate(self._lines(project_id, batch.operation["records_file_id"])):
            fields = orjson.loads(raw)
            job_id = f"{batch.id}-{index}"
            entry = entries.get(record_id(index))
            error = fields.pop("error", None)
            response = (entry or {}).get("response")
            if error is None and entry is None:
                error = {"code": code, "message": "The record never ran."}
            elif error is None and response is None:
                error = (entry or {}).get("error") or {"code": "error", "message": "no response"}
            status, body, cost = (
                (response or {}).get("status_code"),
                (response or {}).get("body"),
                (response or {}).get("cost", 0.0),
            )
            if batch.source == "swarm":
                out.append(_swarm_result(job_id, fields, status, body, error, cost, None, ended).model_dump())
            else:
                out.append(_agent_result_from_body(job_id, fields, status, body, error, cost, ended).model_dump())
        return out

    def _entries(self, project_id: str, batch: BatchRecord) -> Iterator[dict[str, Any]]:
        for file_id in (batch.output_file_id, batch.error_file_id):
            for raw in self._lines(project_id, file_id):
                yield orjson.loads(raw)

    def _lines(self, project_id: str, file_id: str | None) -> Iterator[bytes]:
        if file_id is None:
            return
        _, stream = self.files.open(project_id, file_id)
        with stream:
            for line in stream:
                if line.strip():
                    yield line


# ---- helpers -------------------------------------------------------------------------


def _parse(model: type[BaseModel], raw: object, where: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join([where, *(str(p) for p in first["loc"])])
        raise InvalidRequestError(f"Invalid {param}: {first['msg']}.", param=param, code="invalid_value") from None


def _warn_unknown(model: Any, where: str) -> None:
    if unknown := model.unknown_fields():
        log.warning("%s: ignoring fields this gateway does not use: %s", where, ", ".join(unknown))


def _prompt_key(spec: AgentSpec) -> tuple[str, ...]:
    return (spec.agent_name, spec.description or "", spec.system_prompt or "", spec.model_name)


def _invalid_fields(raw: object, kind: str, error: InvalidRequestError) -> dict[str, Any]:
    """What a record that cannot run is answered with: what can be read of it, and why."""
    raw = raw if isinstance(raw, dict) else {}
    config = raw.get("agent_config")
    config = config if isinstance(config, dict) else {}
    fields: dict[str, Any] = (
        {"name": config.get("agent_name"), "description": config.get("description"), "temperature": None}
        if kind == "agent"
        else {"swarm_name": raw.get("name"), "description": raw.get("description"), "number_of_agents": 0}
    )
    fields = {k: v if isinstance(v, str | None) else None for k, v in fields.items()}
    if kind == "swarm":
        fields["swarm_type"], fields["number_of_agents"] = str(raw.get("swarm_type") or ""), 0
    return {**fields, "error": {"code": error.code or "invalid_request", "message": error.message}}


def spec_fields(spec: AgentSpec) -> dict[str, Any]:
    return {"name": spec.agent_name, "description": spec.description, "temperature": spec.temperature}


def swarm_fields(swarm: SwarmSpec) -> dict[str, Any]:
    return {
        "swarm_name": swarm.name,
        "description": swarm.description,
        "swarm_type": swarm.swarm_type,
        "number_of_agents": len(swarm.agents),
    }


def _error_of(response: BackendResponse | None, body: Any = None) -> dict[str, str]:
    body = body if response is None else response.body
    error = (body or {}).get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return {
            "code": str(error.get("code") or error.get("type") or "error"),
            "message": str(error.get("message", "")),
        }
    return {"code": "error", "message": "The model backend answered with an error."}


def _agent_result(
    job_id: str,
    fields: dict[str, Any],
    turns: list[dict[str, Any]] | None,
    error: dict[str, Any] | None,
    input_tokens: int,
    output_tokens: int,
    cost: float,
    timestamp: str | None = None,
) -> AgentCompletionResponse:
    outputs = [
        {"role": fields["name"] or "assistant", "content": t.get("content"), "tool_calls": t.get("tool_calls") or None}
        for t in turns or []
    ]
    return AgentCompletionResponse.model_validate(
        {
            "job_id": job_id,
            "success": error is None,
            "name": fields.get("name"),
            "description": fields.get("description"),
            "temperature": fields.get("temperature"),
            "outputs": outputs,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
            "cost": cost,
            "timestamp": timestamp or iso(time.time()),
            "error": error,
        }
    )


def _agent_result_from_body(
    job_id: str,
    fields: dict[str, Any],
    status: int | None,
    body: Any,
    error: dict[str, Any] | None,
    cost: float,
    timestamp: str,
) -> AgentCompletionResponse:
    usage = (body.get("usage") if isinstance(body, dict) else None) or {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    if error is None and status != 200:
        error = _error_of(None, body)
    turns = None
    if error is None:
        turns = body.get(TURNS_FIELD) or [body["choices"][0]["message"]]
    return _agent_result(job_id, fields, turns, error, tokens_in, tokens_out, cost, timestamp)


def _swarm_result(
    job_id: str,
    fields: dict[str, Any],
    status: int | None,
    body: Any,
    error: dict[str, Any] | None,
    cost: float,
    elapsed: float | None,
    timestamp: str | None = None,
) -> SwarmCompletionResponse:
    body = body if isinstance(body, dict) else {}
    if error is None and status != 200:
        error = _error_of(None, body)
    usage = body.get("usage") or {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return SwarmCompletionResponse.model_validate(
        {
            "job_id": job_id,
            "status": "success" if error is None else "failed",
            **fields,
            "output": body.get("output") if error is None else None,
            "execution_time": round(elapsed if elapsed is not None else float(body.get("execution_time") or 0.0), 3),
            "usage": {
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
                "cost": cost,
                "per_agent": body.get("per_agent") or {},
            },
            "timestamp": timestamp or iso(time.time()),
            "error": error,
        }
    )
