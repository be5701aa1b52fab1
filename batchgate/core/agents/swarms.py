"""Swarm strategies: several agents on one task, as one line (see `backend.py`).

- SequentialWorkflow: each agent in turn; each sees the task and the previous agent's output.
- ConcurrentWorkflow: every agent on the task at once; output: every agent's answer.
- MixtureOfAgents: every agent at once, then an aggregator (the first agent's model)
  writes one answer from theirs; output: every answer, the aggregator's last.
- MajorityVoting: every agent at once; the most common answer (compared case- and
  punctuation-insensitively) wins; a tie goes to the tied answer given first, and says so.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from batchgate.core.agents.backend import AgentRun, run_agent
from batchgate.core.agents.compile import agent_body
from batchgate.core.errors import BackendRejectedError
from batchgate.core.ports import Backend, BackendRequest, BackendResponse
from batchgate.protocol.agents import AgentCompletion, AgentSpec

AGGREGATOR_PROMPT = (
    "You aggregate the answers of several expert agents to one task into a single best answer: "
    "keep what they agree on, resolve disagreements, drop errors. Answer with the final answer only."
)


async def run_swarm(backend: Backend, request: BackendRequest, spec: dict[str, Any]) -> BackendResponse:
    """The swarm `spec`; each agent's turns are sent as `request` (its id, priority, share
    and routing profile), with the agent's chat body."""
    started = time.perf_counter()
    agents = [AgentSpec.model_validate(a) for a in spec["agents"]]
    swarm = _Swarm(backend, request, spec.get("rules"))
    task, kind = spec["task"], spec["swarm_type"]
    try:
        if kind == "SequentialWorkflow":
            output: Any = await swarm.sequential(agents, task)
        elif kind == "ConcurrentWorkflow":
            output = _messages(agents, await swarm.concurrent(agents, task))
        elif kind == "MixtureOfAgents":
            output = await swarm.mixture(agents, task)
        elif kind == "MajorityVoting":
            output = await swarm.vote(agents, task)
        else:
            raise ValueError(f"unknown swarm type {kind!r}")  # refused when the swarm was accepted
    except _AgentFailed as failed:
        response = failed.response
        body = {**response.body, "usage": _usage(swarm.input_tokens, swarm.output_tokens)}  # spent before it failed
        raise BackendRejectedError(
            BackendResponse(response.status_code, body, swarm.input_tokens, swarm.output_tokens)
        ) from None
    body = {
        "object": "batchgate.swarm",
        "model": agents[0].model_name,
        "output": output,
        "per_agent": swarm.per_agent,
        "execution_time": round(time.perf_counter() - started, 3),
        "usage": _usage(swarm.input_tokens, swarm.output_tokens),
    }
    return BackendResponse(200, body, swarm.input_tokens, swarm.output_tokens, agents[0].model_name, swarm.cost)


class _AgentFailed(Exception):
    def __init__(self, response: BackendResponse):
        self.response = response


class _Swarm:
    def __init__(self, backend: Backend, request: BackendRequest, rules: str | None):
        self.backend = backend
        self.request = request
        self.rules = rules
        self.per_agent: dict[str, dict[str, Any]] = {}
        self.input_tokens = self.output_tokens = 0
        self.cost = 0.0

    async def run(self, agent: AgentSpec, task: str) -> AgentRun:
        system = "\n\n".join(p for p in (agent.system_prompt, f"Rules: {self.rules}" if self.rules else None) if p)
        body = agent_body(AgentCompletion(agent_config=agent, task=task), system or None)
        body.pop("batchgate_agent", None)
        run = await run_agent(self.backend, replace(self.request, body=body), agent.max_loops)
        self._count(agent.agent_name, run)
        if run.failure is not None:
            raise _AgentFailed(run.failure)
        return run

    def _count(self, name: str, run: AgentRun) -> None:
        key, n = name, 2
        while key in self.per_agent:  # two agents of the same name are counted apart
            key, n = f"{name} #{n}", n + 1
        self.per_agent[key] = {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "total_tokens": run.input_tokens + run.output_tokens,
            "cost": run.cost,
        }
        self.input_tokens += run.input_tokens
        self.output_tokens += run.output_tokens
        self.cost += run.cost

    async def concurrent(self, agents: list[AgentSpec], task: str) -> list[AgentRun]:
        return list(await asyncio.gather(*(self.run(a, task) for a in agents)))

    async def sequential(self, agents: list[AgentSpec], task: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for agent in agents:
            step = (
                task
                if not out
                else f"{task}\n\nOutput of the previous agent ({out[-1]['role']}):\n{out[-1]['content']}"
            )
            run = await self.run(agent, step)
            out.append({"role": agent.agent_name, "content": run.text})
        return out

    async def mixture(self, agents: list[AgentSpec], task: str) -> list[dict[str, Any]]:
        answers = _messages(agents, await self.concurrent(agents, task))
        listing = "\n\n".join(f"Answer of {m['role']}:\n{m['content']}" for m in answers)
        first = agents[0]
        aggregator = AgentSpec(
            agent_name="Aggregator",
            model_name=first.model_name,
            system_prompt=AGGREGATOR_PROMPT,
            max_tokens=first.max_tokens,
            temperature=first.temperature,
        )
        final = await self.run(aggregator, f"Task:\n{task}\n\n{listing}")
        return [*answers, {"role": "Aggregator", "content": final.text}]

    async def vote(self, agents: list[AgentSpec], task: str) -> dict[str, Any]:
        answers = _messages(agents, await self.concurrent(agents, task))
        keys = [_normalize(m["content"]) for m in answers]
        votes = Counter(keys)
        top = max(votes.values())
        tied = [k for k in dict.fromkeys(keys) if votes[k] == top]  # in agent order
        winner = tied[0]
        chosen = answers[keys.index(winner)]
        if len(tied) > 1:
            explanation = (
                f"Tie: {len(tied)} answers have {top} vote(s) each; the one given first (by {chosen['role']}) wins."
            )
        else:
            explanation = f"{top} of {len(answers)} agents gave this answer."
        return {
            "answer": chosen["content"],
            "votes": dict(votes),
            "tie": len(tied) > 1,
            "explanation": explanation,
            "responses": answers,
        }


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def _messages(agents: list[AgentSpec], runs: list[AgentRun]) -> list[dict[str, Any]]:
    return [{"role": a.agent_name, "content": r.text} for a, r in zip(agents, runs, strict=True)]


def _normalize(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()
