"""`AgentBackend`: the lines that need several model calls, run on the backend it wraps.

The worker and the synchronous endpoints hold this decorator instead of the router. A
line without an agent or swarm key passes straight through. An agent line with
`max_loops` > 1 runs that many turns, each seeing the conversation so far; a swarm line
runs its strategy (`swarms.py`). Either way it is one request line: its tokens and cost
are summed into one response, so it is metered once, and a crash mid-line reruns the
whole line (its result is still recorded exactly once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from batchgate.core.agents.compile import AGENT_KEY, CHAT, SWARM_KEY
from batchgate.core.errors import BackendRejectedError
from batchgate.core.ports import Backend, BackendRequest, BackendResponse, StreamDelta

CONTINUE = (
    "Review your previous answer against the task. Improve it or continue it, and answer "
    "again in full, in the same format."
)


@dataclass
class AgentRun:
    """What an agent produced over its turns: one assistant message per turn."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    model: str | None = None
    last_body: dict[str, Any] | None = None
    failure: BackendResponse | None = None  # a turn the backend answered with an error

    @property
    def text(self) -> str:
        return str(self.turns[-1].get("content") or "") if self.turns else ""


async def run_agent(backend: Backend, request: BackendRequest, max_loops: int) -> AgentRun:
    """`max_loops` turns of one agent, the chat body `request.body`; each turn is sent as
    `request` (its id, priority, share and routing profile). A turn that asks for tool
    calls ends the run: the gateway does not execute tools, the caller does."""
    run = AgentRun()
    conversation = list(request.body["messages"])
    for turn in range(max_loops):
        if turn:
            conversation += [run.turns[-1], {"role": "user", "content": CONTINUE}]
        try:
            response = await backend.execute(
                replace(request, url=CHAT, body={**request.body, "messages": conversation})
            )
        except BackendRejectedError as exc:  # the backend's error answer: this turn's response
            response = exc.response
        run.input_tokens += response.input_tokens
        run.output_tokens += response.output_tokens
        run.cost += response.cost
        run.model = response.model or run.model
        if response.status_code != 200:
            run.failure = response
            return run
        run.last_body = response.body
        message = dict(response.body["choices"][0]["message"])
        message.setdefault("content", None)
        run.turns.append(message)
        if message.get("tool_calls"):
            break
    return run


class AgentBackend:
    """A Backend: agent and swarm lines run here, every other line goes to `inner`."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name

    async def execute(self, request: BackendRequest) -> BackendResponse:
        body = request.body
        if SWARM_KEY in body:
            from batchgate.core.agents.swarms import run_swarm

            return await run_swarm(self.inner, request, body[SWARM_KEY])
        if AGENT_KEY not in body:
            return await self.inner.execute(request)
        plain = {k: v for k, v in body.items() if k != AGENT_KEY}
        run = await run_agent(self.inner, replace(request, body=plain), int(body[AGENT_KEY]["max_loops"]))
        return agent_response(run)

    def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        return self.inner.stream(request)

    def models(self) -> list[str]:
        return self.inner.models()

    async def aclose(self) -> None:
        await self.inner.aclose()


TURNS_FIELD = "batchgate_turns"


def agent_response(run: AgentRun) -> BackendResponse:
    """The line's response: the last turn's chat completion, with every turn's message
    under `batchgate_turns` and the usage of all turns."""
    usage = {
        "prompt_tokens": run.input_tokens,
        "completion_tokens": run.output_tokens,
        "total_tokens": run.input_tokens + run.output_tokens,
    }
    if run.failure is not None:
        failed = run.failure
        body = (
            {**failed.body, "usage": usage} if isinstance(failed.body, dict) else failed.body
        )  # spent before it failed
        raise BackendRejectedError(
            BackendResponse(
                failed.status_code,
                body,
                run.input_tokens,
                run.output_tokens,
                run.model,
                run.cost,
                failed.backend,
            )
        )
    body = {**(run.last_body or {}), "usage": usage, TURNS_FIELD: run.turns}
    return BackendResponse(200, body, run.input_tokens, run.output_tokens, run.model, run.cost)
