"""An agent completion or a swarm spec → the body of one `/v1/chat/completions` line.

An agent that answers in one turn compiles to a plain chat completion body, so most
agent lines are exactly what an OpenAI batch line would be. An agent with `max_loops` > 1
carries its loop count under `AGENT_KEY`, and a swarm its spec under `SWARM_KEY`:
`AgentBackend` runs those (several model calls for one line) and removes the key before
anything reaches a model backend.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchgate.protocol.agents import AgentCompletion, AgentSpec, SwarmSpec

CHAT = "/v1/chat/completions"
AGENT_KEY = "batchgate_agent"
SWARM_KEY = "batchgate_swarm"
# request fields `llm_args` may not set: the agent's own, streaming (an agent answers whole),
# and the keys that make a batch line something else (a prompt line, an agent loop, a swarm)
RESERVED_ARGS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "prompt_slug",
        "prompt_version",
        "variables",
        AGENT_KEY,
        SWARM_KEY,
    }
)


def agent_body(completion: AgentCompletion, system_prompt: str | None = None) -> dict[str, Any]:
    """The chat body of one agent completion. `system_prompt` (a generated one) replaces
    the spec's own."""
    spec = completion.agent_config
    body: dict[str, Any] = {
        **{k: v for k, v in (spec.llm_args or {}).items() if k not in RESERVED_ARGS},
        "model": spec.model_name,
        "messages": messages(completion, system_prompt or spec.system_prompt),
    }
    if spec.max_tokens is not None:
        body["max_tokens"] = spec.max_tokens
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    if spec.tools_list_dictionary and completion.tools_enabled:
        body["tools"] = spec.tools_list_dictionary
    if spec.max_loops > 1:
        body[AGENT_KEY] = {"max_loops": spec.max_loops}
    return body


def messages(completion: AgentCompletion, system_prompt: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    out.extend(history_messages(completion.history))
    images = [*([completion.img] if completion.img else []), *(completion.imgs or [])]
    if images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": completion.task}]
        parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
        out.append({"role": "user", "content": parts})
    else:
        out.append({"role": "user", "content": completion.task})
    return out


def history_messages(history: object) -> list[dict[str, Any]]:
    """Swarms clients send history as a list of `{role, content}` or as a dict; a dict
    with a `messages` list is that list, any other dict is given to the model as context."""
    if history is None:
        return []
    if isinstance(history, list):
        return [m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in history]
    if isinstance(history, dict):
        listed = history.get("messages")
        if isinstance(listed, list) and all(isinstance(m, dict) and "role" in m for m in listed):
            return [dict(m) for m in listed]
        text = orjson.dumps(history, option=orjson.OPT_INDENT_2).decode()
        return [{"role": "user", "content": f"Conversation history so far:\n{text}"}]
    return []


def swarm_body(swarm: SwarmSpec) -> dict[str, Any]:
    """A swarm as one line. `model` is the first agent's (validation checks it; the
    others are checked when the swarm is accepted)."""
    spec = swarm.model_dump(include={"name", "description", "swarm_type", "task", "rules"})
    spec["agents"] = [a.model_dump(exclude_none=True) for a in swarm.agents]
    return {"model": swarm.agents[0].model_name, SWARM_KEY: spec}


def prompt_request_body(spec: AgentSpec) -> dict[str, Any]:
    """The request that writes an agent's system prompt (`auto_generate_prompt`)."""
    about = f"Agent name: {spec.agent_name}\nDescription: {spec.description or '(none)'}"
    if spec.system_prompt:
        about += f"\nDraft instructions: {spec.system_prompt}"
    return {
        "model": spec.model_name,
        "messages": [
            {
                "role": "system",
                "content": "You write system prompts for AI agents. Answer with the system prompt only: "
                "second person, specific about the agent's task, output format and quality bar.",
            },
            {"role": "user", "content": about},
        ],
        "max_tokens": 400,
        "temperature": 0,
    }
