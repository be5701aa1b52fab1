"""Agents on the fakes: what each model call of an agent sees (max_loops), the system
prompt generated once per batch, tool calls, and how a batch compiles into lines."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgate.app import Services, build_services
from batchgate.core.agents.backend import CONTINUE, AgentBackend
from batchgate.core.ports import BackendRequest, BackendResponse
from batchgate.settings import Settings
from batchgate.testing import InMemoryStore, MemoryBlobStore, ScriptedBackend


class Recording(ScriptedBackend):
    """The echo backend, keeping every request body; a request asking for a system
    prompt gets one, and a request with tools gets a tool call."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    async def execute(self, request: BackendRequest) -> BackendResponse:
        self.bodies.append(request.body)
        if "system prompts for AI agents" in str(request.body["messages"][0].get("content")):
            message = {"role": "assistant", "content": "GENERATED PROMPT"}
            return BackendResponse(200, {"choices": [{"message": message}], "usage": {}}, 10, 3)
        if request.body.get("tools"):
            call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return BackendResponse(200, {"choices": [{"message": message, "finish_reason": "tool_calls"}]}, 5, 2)
        return await super().execute(request)


@pytest.fixture
def svc(tmp_path: Path) -> Services:
    settings = Settings(home=tmp_path, backend="scripted", insecure_no_auth=True)
    return build_services(settings, InMemoryStore(), MemoryBlobStore(), Recording())


def recording(svc: Services) -> Recording:
    """The Recording under the decorators that wrap the backend (AgentBackend among them)."""
    backend, decorators = svc.backend, []
    while not isinstance(backend, Recording):
        decorators.append(type(backend))
        backend = backend.inner  # type: ignore[attr-defined]
    assert AgentBackend in decorators
    return backend


def completion(task: str, **config: Any) -> dict[str, Any]:
    return {"agent_config": {"agent_name": "Scorer", "description": "scores leads", **config}, "task": task}


def test_each_turn_sees_the_conversation_so_far(svc: Services) -> None:
    spec = svc.agents.parse_agent(completion("write a tagline", max_loops=3, system_prompt="Be brief."))
    out = asyncio.run(svc.agents.complete(spec))
    bodies = recording(svc).bodies
    assert len(bodies) == 3 and len(out.outputs) == 3
    assert [m["role"] for m in bodies[2]["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert bodies[2]["messages"][2]["content"] == out.outputs[0].content == "echo: write a tagline"
    assert bodies[2]["messages"][4]["content"] == out.outputs[1].content
    assert bodies[2]["messages"][5]["content"] == CONTINUE
    assert out.usage.input_tokens > 0 and "batchgate_agent" not in bodies[0]


def test_a_system_prompt_is_generated_once_per_batch(svc: Services) -> None:
    records = [completion(f"lead {i}", auto_generate_prompt=True) for i in range(5)]
    batch = asyncio.run(svc.agents.submit("p", "agent", records))
    prompt_requests = [b for b in recording(svc).bodies if "system prompts" in str(b["messages"][0]["content"])]
    assert len(prompt_requests) == 1
    assert "Agent name: Scorer" in prompt_requests[0]["messages"][1]["content"]
    _, stream = svc.files.open("p", batch.input_file_id)
    lines = [orjson.loads(x) for x in stream.read().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"agent-{i:07d}" for i in range(5)]
    assert {line["body"]["messages"][0]["content"] for line in lines} == {"GENERATED PROMPT"}


def test_a_tool_call_is_returned_not_executed(svc: Services) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    spec = svc.agents.parse_agent(completion("find x", tools_list_dictionary=[tool], max_loops=3))
    out = asyncio.run(svc.agents.complete(spec))
    assert len(out.outputs) == 1, "a turn that calls a tool ends the run: the caller executes tools"
    assert out.outputs[0].tool_calls and out.outputs[0].tool_calls[0]["function"]["name"] == "lookup"
    assert recording(svc).bodies[0]["tools"] == [tool]
    off = svc.agents.parse_agent({**completion("find x", tools_list_dictionary=[tool]), "tools_enabled": False})
    asyncio.run(svc.agents.complete(off))
    assert "tools" not in recording(svc).bodies[-1]


def test_history_images_and_llm_args_compile_into_the_body(svc: Services) -> None:
    raw = completion("and now?", llm_args={"top_p": 0.5, "response_format": {"type": "json_object"}}, max_tokens=9)
    raw |= {
        "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "img": "http://i",
    }
    asyncio.run(svc.agents.complete(svc.agents.parse_agent(raw)))
    body = recording(svc).bodies[-1]
    assert body["top_p"] == 0.5 and body["response_format"] == {"type": "json_object"} and body["max_tokens"] == 9
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"][1] == {"type": "image_url", "image_url": {"url": "http://i"}}


def test_llm_args_cannot_turn_a_line_into_something_else(svc: Services) -> None:
    reserved = {"model": "x", "stream": True, "prompt_slug": "p", "batchgate_swarm": {}, "batchgate_agent": {}}
    out = asyncio.run(svc.agents.complete(svc.agents.parse_agent(completion("hi", llm_args={**reserved, "seed": 3}))))
    body = recording(svc).bodies[-1]
    assert out.success and body["seed"] == 3 and body["model"] == "default"
    assert not {"stream", "prompt_slug", "batchgate_swarm", "batchgate_agent"} & set(body)


def test_unknown_fields_are_ignored_with_a_warning(svc: Services, caplog: pytest.LogCaptureFixture) -> None:
    svc.agents.parse_agent(completion("x", mcp_url="http://m", streaming_on=True))
    assert "mcp_url, streaming_on" in caplog.text


def test_majority_voting_explains_a_tie_and_an_agent_failure_fails_the_swarm(svc: Services) -> None:
    agents = [{"agent_name": n, "model_name": "m"} for n in ("A", "B")]
    # the echo answers each agent with its own system prompt's task: two different answers
    spec = {"agents": agents, "swarm_type": "MajorityVoting", "task": "pick"}
    spec["agents"] = [{**agents[0], "llm_args": {"seed": 1}}, {**agents[1], "max_loops": 2}]
    out = asyncio.run(svc.agents.swarm(svc.agents.parse_swarm(spec)))
    vote = out.output
    assert vote["tie"] is True and vote["answer"] == "echo: pick" and "Tie" in vote["explanation"]
    assert "by A" in vote["explanation"] and set(out.usage.per_agent) == {"A", "B"}

    spec["agents"] = [agents[0], {**agents[1], "llm_args": {"mock": {"status": 400}}}]
    failed = asyncio.run(svc.agents.swarm(svc.agents.parse_swarm(spec)))
    assert failed.status == "failed" and failed.error is not None and "scripted error 400" in failed.error.message
    assert failed.usage.input_tokens > 0  # what the swarm used before it failed is still counted


def test_a_dict_history_is_context_and_its_messages_list_is_used_as_such(svc: Services) -> None:
    as_list = {"messages": [{"role": "user", "content": "earlier"}]}
    asyncio.run(svc.agents.complete(svc.agents.parse_agent({**completion("now"), "history": as_list})))
    assert [m["content"] for m in recording(svc).bodies[-1]["messages"]] == ["earlier", "now"]
    asyncio.run(svc.agents.complete(svc.agents.parse_agent({**completion("now"), "history": {"crm": "gold"}})))
    first = recording(svc).bodies[-1]["messages"][0]["content"]
    assert first.startswith("Conversation history so far:") and '"crm": "gold"' in first


def test_agent_batch_pages_filter_in_the_store_so_none_is_empty_while_batches_exist(svc: Services) -> None:
    def openai_batch() -> None:
        with svc.files.upload("p") as upload:
            upload.write(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
            file = upload.commit("batch", "input.jsonl")
        svc.batches.create("p", file.id, "/v1/chat/completions", "24h")

    ids = []
    for i in range(3):
        ids.append(asyncio.run(svc.agents.submit("p", "agent", [completion(f"lead {i}")])).id)
        for _ in range(3):  # more other batches between two agent batches than a page holds
            openai_batch()
    pages, after = [], None
    while True:
        data, has_more, after = svc.agents.list_batches("p", "agent", after, 2)
        pages.append([b.id for b in data])
        if not has_more:
            break
    assert pages == [ids[::-1][:2], [ids[0]]]
    assert svc.agents.list_batches("p", "swarm", None, 2) == ([], False, None)


def test_every_turn_of_an_agent_or_swarm_line_keeps_the_lines_share_and_profile() -> None:
    """A batch line's project/batch share (its turn at an upstream) and its key's routing
    profile go with each model call the line makes, not just the first."""
    seen: list[BackendRequest] = []

    class Keeping(ScriptedBackend):
        async def execute(self, request: BackendRequest) -> BackendResponse:
            seen.append(request)
            return await super().execute(request)

    backend = AgentBackend(Keeping())
    agent = {"agent_name": "A", "model_name": "m", "max_loops": 2}
    line = BackendRequest("c1", "/v1/chat/completions", {}, share=("proj", "batch_1"), profile="cheap")
    spec = {"agents": [agent, {**agent, "agent_name": "B"}], "swarm_type": "SequentialWorkflow", "task": "t"}
    agent_line = {"model": "m", "messages": [{"role": "user", "content": "t"}], "batchgate_agent": {"max_loops": 2}}
    asyncio.run(backend.execute(replace(line, body=agent_line)))
    asyncio.run(backend.execute(replace(line, body={"model": "m", "batchgate_swarm": spec})))
    assert len(seen) == 2 + 2 * 2, "two turns of the agent, two of each swarm agent"
    assert {(r.share, r.profile, r.interactive, r.url) for r in seen} == {
        (("proj", "batch_1"), "cheap", False, "/v1/chat/completions")
    }
    assert all("batchgate_agent" not in r.body and "batchgate_swarm" not in r.body for r in seen)
