"""Stored responses' input items (OpenAI's shape, paged), their expiry and sweeping, and
native /v1/responses passthrough to upstreams that serve it, on the fakes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from batchgate.core.errors import BackendRejectedError, InvalidRequestError, NotFoundError
from batchgate.core.ports import BackendRequest, BackendResponse
from batchgate.core.response_service import ResponseService
from batchgate.core.responses import RESPONSES, ResponsesBackend, input_items
from batchgate.core.retention import Sweeper
from batchgate.core.routing import ConfigError, parse_config
from batchgate.testing import FakeClock, InMemoryStore, ScriptedBackend

DAY = 86_400
CONVERSATION = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "input_text", "text": "Weather "}, {"type": "input_text", "text": "in Oslo?"}]},
    {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}', "id": "fc_given"},
    {"type": "function_call_output", "call_id": "call_1", "output": "3C"},
    {"role": "assistant", "content": "It is 3C."},
    {"role": "user", "content": "Thanks"},
]  # fmt: skip


def test_input_items_are_openais_items_with_ids() -> None:
    (item,) = input_items("hi")
    assert item["id"].startswith("msg_") and item["content"] == [{"type": "input_text", "text": "hi"}]
    items = input_items(CONVERSATION)
    assert [(i["type"], i.get("role")) for i in items] == [
        ("message", "developer"),
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert len({i["id"] for i in items}) == 6 and items[2]["id"] == "fc_given", "an item's own id is kept"
    assert items[1]["content"] == [
        {"type": "input_text", "text": "Weather "},
        {"type": "input_text", "text": "in Oslo?"},
    ]
    assert items[2] | {"id": "x"} == {
        "id": "x",
        "type": "function_call",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city":"Oslo"}',
        "status": "completed",
    }
    assert items[3]["output"] == "3C" and items[3]["id"].startswith("fco_")
    assert items[4]["content"] == [{"type": "output_text", "text": "It is 3C.", "annotations": [], "logprobs": []}]


def service(clock: FakeClock | None = None, retention: int | None = 30 * DAY) -> ResponseService:
    return ResponseService(ScriptedBackend(), InMemoryStore(), clock or FakeClock(1_800_000_000), retention)


def test_input_items_are_listed_a_page_at_a_time_newest_first() -> None:
    svc = service()
    response = asyncio.run(svc.create("p", {"model": "m", "input": CONVERSATION, "store": True}))
    assert not isinstance(response, dict)
    every = asyncio.run(svc.input_items("p", response.id, order="asc", limit=100))
    ids = [item.id for item in every.data]  # type: ignore[union-attr]
    assert len(ids) == 6 and not every.has_more and (every.first_id, every.last_id) == (ids[0], ids[-1])
    assert every.data[0].model_dump()["role"] == "developer"  # type: ignore[union-attr]

    newest = asyncio.run(svc.input_items("p", response.id, limit=4))
    assert [i.id for i in newest.data] == ids[::-1][:4] and newest.has_more  # type: ignore[union-attr]
    rest = asyncio.run(svc.input_items("p", response.id, after=newest.last_id, limit=4))
    assert [i.id for i in rest.data] == ids[::-1][4:] and not rest.has_more  # type: ignore[union-attr]
    page = asyncio.run(svc.input_items("p", response.id, after=ids[1], order="asc", limit=2))
    assert [i.id for i in page.data] == ids[2:4] and page.has_more  # type: ignore[union-attr]

    with pytest.raises(InvalidRequestError) as unknown:
        asyncio.run(svc.input_items("p", response.id, after="msg_nope"))
    assert unknown.value.param == "after"
    with pytest.raises(NotFoundError):
        asyncio.run(svc.input_items("other-project", response.id))


def test_a_stored_response_expires_and_is_swept() -> None:
    clock = FakeClock(1_800_000_000)
    svc = service(clock, retention=DAY)
    old = asyncio.run(svc.create("p", {"model": "m", "input": "one", "store": True}))
    clock.advance(DAY - 10)
    young = asyncio.run(svc.create("p", {"model": "m", "input": "two", "store": True}))
    assert not isinstance(old, dict) and not isinstance(young, dict)
    assert asyncio.run(svc.get("p", old.id))["id"] == old.id
    clock.advance(10)  # the first is a day old: gone, though its row is still there
    for call in (
        svc.get("p", old.id),
        svc.input_items("p", old.id),
        svc.delete("p", old.id),
        svc.create("p", {"model": "m", "input": "x", "previous_response_id": old.id}),
    ):
        with pytest.raises(NotFoundError):
            asyncio.run(call)
    assert svc.store.get_response(old.id, "p") is not None
    assert asyncio.run(svc.get("p", young.id))["id"] == young.id

    sweeper = Sweeper(svc.store, blobs=None, clock=clock, response_retention=DAY)  # type: ignore[arg-type]
    assert sweeper.sweep() == 1
    assert svc.store.get_response(old.id, "p") is None and svc.store.get_response(young.id, "p") is not None
    assert Sweeper(svc.store, None, clock).sweep() == 0, "without a retention, responses are kept"  # type: ignore[arg-type]


def test_without_a_retention_stored_responses_are_kept() -> None:
    clock = FakeClock(1_800_000_000)
    svc = service(clock, retention=None)
    kept = asyncio.run(svc.create("p", {"model": "m", "input": "one", "store": True}))
    clock.advance(365 * DAY)
    assert asyncio.run(svc.get("p", kept.id))["id"] == kept.id  # type: ignore[union-attr]


# ---- native passthrough ------------------------------------------------------------


class NativeUpstream(ScriptedBackend):
    """Answers /v1/responses as an upstream that serves it would, and records what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[BackendRequest] = []

    async def execute(self, request: BackendRequest) -> BackendResponse:
        self.got.append(request)
        if request.url != RESPONSES:
            return await super().execute(request)
        body = {
            "id": f"resp_up{len(self.got)}",
            "object": "response",
            "created_at": 1_800_000_000,
            "status": "completed",
            "model": request.body["model"],
            "output": [
                {"id": "rs_1", "type": "reasoning", "summary": []},
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "native answer", "annotations": []}],
                },
            ],
            "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
        }
        return BackendResponse(200, body, 7, 3, model=request.body["model"], cost=0.25)


def native(model: str) -> bool:
    return model == "gpt-native"


def test_batch_lines_of_a_native_model_are_forwarded_as_they_are() -> None:
    upstream = NativeUpstream()
    backend = ResponsesBackend(upstream, native)
    body = {"model": "gpt-native", "input": "hi", "reasoning": {"effort": "high"}, "tools": [{"type": "web_search"}]}
    answer = asyncio.run(backend.execute(BackendRequest("line-1", RESPONSES, body)))
    assert upstream.got[-1].url == RESPONSES and upstream.got[-1].body == body, "not translated, nothing refused"
    assert answer.body["output"][0]["type"] == "reasoning" and answer.body["cost"] == 0.25
    assert (answer.input_tokens, answer.output_tokens) == (7, 3)
    for param in ("stream", "previous_response_id"):
        with pytest.raises(BackendRejectedError) as refused:
            asyncio.run(backend.execute(BackendRequest("line-2", RESPONSES, {**body, param: "resp_x"})))
        assert refused.value.param == param and refused.value.response.status_code == 400
    # another model is still translated to chat completions
    asyncio.run(backend.execute(BackendRequest("line-3", RESPONSES, {"model": "m", "input": "hi"})))
    assert upstream.got[-1].url == "/v1/chat/completions"


def test_a_synchronous_native_response_is_forwarded_stored_and_continued() -> None:
    upstream = NativeUpstream()
    store = InMemoryStore()
    svc = ResponseService(ResponsesBackend(upstream, native), store, FakeClock(1_800_000_000), DAY, native)
    body = {"model": "gpt-native", "input": "hi", "store": True, "reasoning": {"effort": "low"}}
    first = asyncio.run(svc.create("p", body))
    assert isinstance(first, dict) and first["id"] == "resp_up1" and first["output"][0]["type"] == "reasoning"
    assert upstream.got[-1].body == body and upstream.got[-1].interactive
    stored = store.get_response("resp_up1", "p")
    assert stored is not None and stored.native and stored.response == first
    assert stored.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "native answer"}]
    assert [i.model_dump()["content"][0]["text"] for i in asyncio.run(svc.input_items("p", "resp_up1")).data] == ["hi"]  # type: ignore[union-attr]

    again = {"model": "gpt-native", "input": "more", "previous_response_id": "resp_up1"}
    second = asyncio.run(svc.create("p", again))
    assert isinstance(second, dict) and upstream.got[-1].body == again, "the upstream holds the previous one"
    with pytest.raises(NotFoundError):
        asyncio.run(svc.create("q", again))  # another project's: never forwarded
    assert len(upstream.got) == 2

    # continued on a model that is translated: from the stored conversation
    translated = asyncio.run(svc.create("p", {"model": "m", "input": "then", "previous_response_id": "resp_up1"}))
    assert not isinstance(translated, dict)
    assert upstream.got[-1].body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "native answer"},
        {"role": "user", "content": "then"},
    ]


def test_a_native_model_continuing_a_translated_response_is_translated() -> None:
    upstream = NativeUpstream()
    svc = ResponseService(ResponsesBackend(upstream, native), InMemoryStore(), FakeClock(1_800_000_000), DAY, native)
    first = asyncio.run(svc.create("p", {"model": "m", "input": "one", "store": True}))
    assert not isinstance(first, dict)
    asyncio.run(svc.create("p", {"model": "gpt-native", "input": "two", "previous_response_id": first.id}))
    assert upstream.got[-1].url == "/v1/chat/completions", "the upstream does not know a translated response"


def upstreams(responses: str, fallback_native: bool = True) -> dict[str, Any]:
    return {
        "backends": {
            "a": {"base_url": "http://a/v1", "responses": responses},
            "b": {"base_url": "http://b/v1", "responses": "native" if fallback_native else "chat"},
        },
        "models": {"x": {"backend": "a", "fallbacks": ["y"]}, "y": {"backend": "b"}, "z": {"backend": "local"}},
    }


def test_a_model_is_native_when_every_route_of_its_chain_is() -> None:
    config = parse_config(upstreams("native"))
    assert config.native_responses("x") and config.native_responses("y")
    assert not config.native_responses("z") and not config.native_responses("unlisted")
    assert not parse_config(upstreams("native", fallback_native=False)).native_responses("x")
    assert not parse_config(upstreams("chat")).native_responses("x")
    assert replace(config.upstreams["a"]).responses == "native"
    with pytest.raises(ConfigError) as bad:
        parse_config(upstreams("yes"))
    assert "[backends.a] responses" in str(bad.value)
