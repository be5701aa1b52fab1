"""Native /v1/responses passthrough, through the official `openai` client: a gateway whose
upstream says `responses = "native"` forwards Responses requests to it as they came (the
model renamed), synchronous, streamed and in batches, and maps its usage and cost back; a
streamed request's events are the upstream's own. The upstream is a real HTTP server that
records what it was sent."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai import OpenAI
from support import TERMINAL, Server, jsonl, parse_jsonl
from upstreams import BackgroundApp

UPSTREAM_MODEL = "vendor/reasoner-1"


class Upstream:
    """Serves /v1/responses (with a reasoning item, as a reasoning model does; streamed as
    its own events with `stream: true`) and /v1/chat/completions (streamed), and keeps the
    bodies it got."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.responses = 0

    async def respond(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.got.append(("/v1/responses", body))
        if body.get("previous_response_id") not in (None, "resp_up1"):
            error = {"message": "Previous response not found.", "type": "invalid_request_error", "param": "previous_response_id", "code": None}  # fmt: skip
            return web.json_response({"error": error}, status=404)
        self.responses += 1
        text = body["input"] if isinstance(body["input"], str) else "items"
        if body.get("stream"):
            return await self.stream(request, body, text)
        return web.json_response(self.response(body, "completed", [self.reasoning(), self.message(f"native: {text}")]))

    def response(self, body: dict[str, Any], status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"resp_up{self.responses}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools", []),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "usage": {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 40,
                "output_tokens_details": {"reasoning_tokens": 30},
                "total_tokens": 140,
            }
            if status == "completed"
            else None,
        }

    def reasoning(self) -> dict[str, Any]:
        return {"id": f"rs_{self.responses}", "type": "reasoning", "summary": []}

    def message(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}] if text or status == "completed" else []
        return {"id": f"msg_{self.responses}", "type": "message", "role": "assistant", "status": status, "content": content}  # fmt: skip

    async def stream(self, request: web.Request, body: dict[str, Any], text: str) -> web.StreamResponse:
        """OpenAI's events of a response with a reasoning item, its text in three deltas,
        each delta with a field only this upstream writes (`upstream_marker`); the final
        event written in pieces, as a network may deliver it."""
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        pieces = ["native ", "stream: ", text]
        message_id, full = f"msg_{self.responses}", "".join(pieces)
        part = {"type": "output_text", "text": "", "annotations": []}
        at = {"item_id": message_id, "output_index": 1, "content_index": 0}  # the message's text
        marked = {"logprobs": [], "upstream_marker": "mock"}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.response(body, "in_progress", [])},
            {"type": "response.in_progress", "response": self.response(body, "in_progress", [])},
            {"type": "response.output_item.added", "output_index": 0, "item": self.reasoning()},
            {"type": "response.output_item.done", "output_index": 0, "item": self.reasoning()},
            {"type": "response.output_item.added", "output_index": 1, "item": self.message("", "in_progress")},
            {"type": "response.content_part.added", **at, "part": part},
            *({"type": "response.output_text.delta", **at, "delta": piece, **marked} for piece in pieces),
            {"type": "response.output_text.done", **at, "text": full, "logprobs": []},
            {"type": "response.content_part.done", **at, "part": {**part, "text": full}},
            {"type": "response.output_item.done", "output_index": 1, "item": self.message(full)},
        ]
        for number, event in enumerate(events[:3] if text == "cut" else events):
            data = json.dumps({**event, "sequence_number": number}).encode()
            await stream.write(b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n")
        if text == "cut":  # the upstream ends its stream before the response ends
            return stream
        completed = {"type": "response.completed", "sequence_number": len(events), "response": self.response(body, "completed", [self.reasoning(), self.message(full)])}  # fmt: skip
        data = b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"
        for at in range(0, len(data), 100):
            await stream.write(data[at : at + 100])
        return stream

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.got.append(("/v1/chat/completions", body))
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for piece, finish in (("streamed ", None), ("words", "stop")):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"], "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]}  # fmt: skip
            await stream.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"], "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}  # fmt: skip
        await stream.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        return stream


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, BackgroundApp]]:
    fake = Upstream()
    app = web.Application()
    app.router.add_post("/v1/responses", fake.respond)
    app.router.add_post("/v1/chat/completions", fake.chat)
    with BackgroundApp(app) as server:
        yield fake, server


@pytest.fixture
def gateway(
    start_server: Callable[..., Server], tmp_path: Path, upstream: tuple[Upstream, BackgroundApp]
) -> tuple[Server, OpenAI]:
    config = tmp_path / "batchgate.toml"
    config.write_text(
        f'[backends.up]\nbase_url = "{upstream[1].url}/v1"\nresponses = "native"\nmax_retries = 0\n\n'
        f'[models.reasoner]\nbackend = "up"\nmodel = "{UPSTREAM_MODEL}"\n'
        "price = { input = 2.0, output = 10.0 }\n\n"
        # the same upstream, not said to serve /v1/responses: translated to chat completions
        f'[backends.chat]\nbase_url = "{upstream[1].url}/v1"\nmax_retries = 0\n\n'
        f'[models.chatter]\nbackend = "chat"\nmodel = "{UPSTREAM_MODEL}"\n'
    )
    server = start_server({"BATCHGATE_CONFIG": str(config)}, insecure=True)
    return server, OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_a_response_is_forwarded_as_it_came_and_its_usage_and_cost_mapped_back(
    gateway: tuple[Server, OpenAI], upstream: tuple[Upstream, BackgroundApp]
) -> None:
    server, client = gateway
    fake = upstream[0]
    response = client.responses.create(
        model="reasoner",
        input="why is the sky blue?",
        reasoning={"effort": "high"},  # refused by a translating gateway: forwarded here
        tools=[{"type": "web_search_preview"}],
        store=True,
        metadata={"team": "a"},
    )
    path, sent = fake.got[-1]
    assert path == "/v1/responses"
    assert sent == {
        "model": UPSTREAM_MODEL,  # renamed, nothing else touched
        "input": "why is the sky blue?",
        "reasoning": {"effort": "high"},
        "tools": [{"type": "web_search_preview"}],
        "store": True,
        "metadata": {"team": "a"},
    }
    assert response.id == "resp_up1" and response.output_text == "native: why is the sky blue?"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 30
    cost = (100 * 2.0 + 40 * 10.0) / 1_000_000
    assert response.model_extra is not None and response.model_extra["cost"] == pytest.approx(cost)

    # stored by the gateway too: retrieved, listed and continued without the upstream
    assert client.responses.retrieve(response.id).output_text == response.output_text
    (item,) = client.responses.input_items.list(response.id).data
    assert item.type == "message" and item.role == "user"  # type: ignore[union-attr]
    second = client.responses.create(model="reasoner", input="and at dusk?", previous_response_id=response.id)
    assert fake.got[-1][1]["previous_response_id"] == "resp_up1" and second.id == "resp_up2"
    with pytest.raises(openai.NotFoundError):  # the gateway never stored it: not forwarded
        client.responses.create(model="reasoner", input="x", previous_response_id="resp_up2")
    assert len(fake.got) == 2

    # metered: one ledger row per answered request, with the upstream's tokens and the cost
    logs = httpx.get(server.url + "/v1/logs", params={"endpoint": "/v1/responses"}, timeout=10).json()["data"]
    answered = [row for row in logs if row["status_code"] == 200]
    assert len(answered) == 2 and {(r["input_tokens"], r["output_tokens"]) for r in answered} == {(100, 40)}
    assert {r["model"] for r in answered} == {"reasoner"} and {r["resolved_model"] for r in answered} == {
        UPSTREAM_MODEL
    }
    assert sum(r["cost"] for r in answered) == pytest.approx(2 * cost)


def test_a_streamed_response_is_the_upstreams_own_events_metered_and_stored(
    gateway: tuple[Server, OpenAI], upstream: tuple[Upstream, BackgroundApp]
) -> None:
    server, client = gateway
    fake = upstream[0]
    events = list(client.responses.create(model="reasoner", input="count", stream=True, store=True))
    path, sent = fake.got[-1]
    assert path == "/v1/responses"
    assert sent == {"model": UPSTREAM_MODEL, "input": "count", "stream": True, "store": True}  # renamed only

    # the upstream's events, as it wrote them: its reasoning item, its own field, its numbers
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed" and len(events) == 13
    assert [event.sequence_number for event in events] == list(range(13))
    assert events[2].item.type == "reasoning" and events[2].item.id == "rs_1"  # type: ignore[union-attr]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert "".join(d.delta for d in deltas) == "native stream: count"
    assert all(d.model_extra is not None and d.model_extra["upstream_marker"] == "mock" for d in deltas)
    final = events[-1].response  # type: ignore[union-attr]
    assert final.id == "resp_up1" and final.output_text == "native stream: count"
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (100, 40)
    cost = (100 * 2.0 + 40 * 10.0) / 1_000_000
    assert final.model_extra is not None and final.model_extra["cost"] == pytest.approx(cost)

    # the client's stream helper reads the same events into the same final response
    with client.responses.stream(model="reasoner", input="again") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        helper_final = stream.get_final_response()
    assert text == "native stream: again" == helper_final.output_text and helper_final.id == "resp_up2"
    assert fake.got[-1][1] == {"model": UPSTREAM_MODEL, "input": "again", "stream": True}

    # stored from response.completed: retrieved, its input items listed, continued natively
    stored = client.responses.retrieve("resp_up1")
    assert stored.output_text == "native stream: count" and stored.model_extra is not None
    assert stored.model_extra["cost"] == pytest.approx(cost)
    (item,) = client.responses.input_items.list("resp_up1").data
    assert item.type == "message" and item.role == "user"  # type: ignore[union-attr]
    with client.responses.stream(model="reasoner", input="more", previous_response_id="resp_up1") as stream:
        assert stream.get_final_response().output_text == "native stream: more"
    assert fake.got[-1][1]["previous_response_id"] == "resp_up1"
    with pytest.raises(openai.NotFoundError):  # not stored (no store: true): never forwarded
        client.responses.create(model="reasoner", input="x", previous_response_id="resp_up2", stream=True)
    assert len(fake.got) == 3 and not any(p == "/v1/chat/completions" for p, _ in fake.got)

    # metered: a ledger row per streamed request, with the upstream's tokens and the cost
    logs = httpx.get(server.url + "/v1/logs", params={"endpoint": "/v1/responses"}, timeout=10).json()["data"]
    answered = [row for row in logs if row["status_code"] == 200]
    assert len(answered) == 3 and {(r["input_tokens"], r["output_tokens"]) for r in answered} == {(100, 40)}
    assert {(r["model"], r["resolved_model"], r["backend"]) for r in answered} == {("reasoner", UPSTREAM_MODEL, "up")}
    assert sum(r["cost"] for r in answered) == pytest.approx(3 * cost)


def test_a_native_stream_that_ends_early_ends_with_an_error_event(gateway: tuple[Server, OpenAI]) -> None:
    _, client = gateway
    events = list(client.responses.create(model="reasoner", input="cut", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "error",
    ]
    error = events[-1]
    assert error.sequence_number == 3 and error.code == "upstream_unreachable"  # type: ignore[union-attr]
    assert "ended before the response did" in error.message  # type: ignore[union-attr]


def test_a_streamed_response_for_a_model_not_served_natively_is_translated_to_chat_completions(
    gateway: tuple[Server, OpenAI], upstream: tuple[Upstream, BackgroundApp]
) -> None:
    _, client = gateway
    with client.responses.stream(model="chatter", input="count") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "streamed words" and final.output_text == text and final.status == "completed"
    assert final.id.startswith("resp_") and final.usage is not None and final.usage.output_tokens == 2
    path, sent = upstream[0].got[-1]
    assert path == "/v1/chat/completions" and sent["model"] == UPSTREAM_MODEL
    assert sent["messages"] == [{"role": "user", "content": "count"}]


def test_a_batch_of_responses_lines_is_forwarded_line_by_line(
    gateway: tuple[Server, OpenAI], upstream: tuple[Upstream, BackgroundApp]
) -> None:
    _, client = gateway
    line = {"method": "POST", "url": "/v1/responses"}
    rows = [
        {**line, "custom_id": f"r{i}", "body": {"model": "reasoner", "input": f"q{i}", "reasoning": {"effort": "low"}}}
        for i in range(3)
    ]
    rows.append({"custom_id": "bad", "method": "POST", "url": "/v1/responses", "body": {"model": "reasoner", "input": "x", "previous_response_id": "resp_up1"}})  # fmt: skip
    file = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/responses", completion_window="24h")
    deadline = time.time() + 60
    while batch.status not in TERMINAL:
        assert time.time() < deadline, batch.status
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 1)
    assert batch.usage is not None and (batch.usage.input_tokens, batch.usage.output_tokens) == (300, 120)
    assert batch.output_file_id and batch.error_file_id
    output = {r["custom_id"]: r["response"] for r in parse_jsonl(client.files.content(batch.output_file_id).content)}
    assert set(output) == {"r0", "r1", "r2"}
    body = output["r1"]["body"]
    assert output["r1"]["status_code"] == 200 and body["output"][0]["type"] == "reasoning"
    assert body["output"][1]["content"][0]["text"] == "native: q1"
    assert body["cost"] == pytest.approx((100 * 2.0 + 40 * 10.0) / 1_000_000 / 2), "the batch discount applies"
    forwarded = [sent for path, sent in upstream[0].got if path == "/v1/responses"]
    assert sorted(s["input"] for s in forwarded) == ["q0", "q1", "q2"]
    assert all(s["model"] == UPSTREAM_MODEL and s["reasoning"] == {"effort": "low"} for s in forwarded)
    (error,) = parse_jsonl(client.files.content(batch.error_file_id).content)
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "previous_response_id"
