"""The Responses API's translation to and from chat completions, on the fakes: what each
Responses parameter becomes, refusals naming the parameter, the engine's refusals renamed
back, batch lines through ResponsesBackend, stored conversations and the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from batchgate.core.errors import BackendRejectedError, InvalidRequestError, NotFoundError, UpstreamUnreachableError
from batchgate.core.ports import BackendRequest, BackendResponse, StreamDelta
from batchgate.core.response_service import ResponseService
from batchgate.core.responses import RESPONSES, ResponsesBackend, rename_refusal, renamed, translate
from batchgate.testing import InMemoryStore, ScriptedBackend

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_a_request_becomes_its_chat_request() -> None:
    t = translate(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [{"type": "input_text", "text": "Weather "}, {"type": "input_text", "text": "in Oslo?"}]},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'},
                {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": '{"city":"Bergen"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "3C"},
            ],
            "max_output_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": SCHEMA, "strict": True}},
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"},
            "parallel_tool_calls": False,
        }
    )  # fmt: skip
    assert t.chat == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use metric units."},
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Bergen"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "3C"},
        ],
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMA, "strict": True}},
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
    }  # fmt: skip
    assert t.messages == t.chat["messages"][1:], "instructions are not part of the stored conversation"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
        ({"input": "x", "reasoning": {"effort": "low"}}, "reasoning"),
        ({"input": "x", "include": ["reasoning.encrypted_content"]}, "include"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "top_logprobs": 3}, "top_logprobs"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"input": "x", "seed": 1}, "seed"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "schema": SCHEMA}}}, "text.format.name"),
        ({"input": "x", "text": {"verbosity": "low"}}, "text.verbosity"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ],
)  # fmt: skip
def test_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        translate({"model": "m", **body})
    assert refused.value.status == 400 and refused.value.param == param


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("messages", "input"),
        ("messages[2].content", "input[2].content"),
        ("max_tokens", "max_output_tokens"),
        ("response_format", "text.format"),
        ("response_format.json_schema.schema.properties.n", "text.format.schema.properties.n"),
        ("tools[1].function.parameters", "tools[1].parameters"),
        ("tool_choice.function.name", "tool_choice.name"),
        ("temperature", "temperature"),
    ],
)
def test_engine_refusals_are_renamed_to_what_the_caller_sent(chat: str, responses: str) -> None:
    assert renamed(chat) == responses
    error = {"error": {"message": "bad", "type": "invalid_request_error", "param": chat, "code": "invalid_value"}}
    again = rename_refusal(BackendRejectedError(BackendResponse(400, error)))
    assert again.param == responses and again.status == 400
    assert again.response.body["error"]["param"] == responses


def test_batch_lines_run_as_chat_and_answer_a_response_object() -> None:
    backend = ResponsesBackend(ScriptedBackend())
    body = {"model": "m", "input": "hello", "max_output_tokens": 5, "metadata": {"k": "v"}}
    answer = asyncio.run(backend.execute(BackendRequest("line-1", RESPONSES, body)))
    response = answer.body
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "echo: hello",
        "annotations": [],
        "logprobs": [],
    }
    assert response["usage"]["total_tokens"] == answer.input_tokens + answer.output_tokens > 0
    assert response["metadata"] == {"k": "v"} and response["max_output_tokens"] == 5 and not response["store"]
    for extra, param in [({"store": True}, "store"), ({"stream": True}, "stream"), ({"tools": [{}]}, "tools[0].type")]:
        with pytest.raises(BackendRejectedError) as refused:
            asyncio.run(backend.execute(BackendRequest("line-2", RESPONSES, {**body, **extra})))
        assert refused.value.response.status_code == 400 and refused.value.param == param


def test_a_stored_response_is_continued_and_scoped_to_its_project() -> None:
    store = InMemoryStore()
    service = ResponseService(ScriptedBackend(), store)
    first = asyncio.run(service.create("p1", {"model": "m", "input": "one", "store": True, "instructions": "x"}))
    assert asyncio.run(service.get("p1", first.id))["output"][0]["content"][0]["text"] == "echo: one"
    with pytest.raises(NotFoundError):
        asyncio.run(service.get("p2", first.id))
    stored = store.get_response(first.id, "p1")
    assert stored is not None and stored.messages == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
    ]
    second = asyncio.run(service.create("p1", {"model": "m", "input": "two", "previous_response_id": first.id}))
    assert second.previous_response_id == first.id and second.store is False
    assert store.get_response(second.id, "p1") is None, "store defaults to false"
    with pytest.raises(NotFoundError) as missing:
        asyncio.run(service.create("p2", {"model": "m", "input": "two", "previous_response_id": first.id}))
    assert missing.value.param == "previous_response_id"
    assert asyncio.run(service.delete("p1", first.id)).deleted
    with pytest.raises(NotFoundError):
        asyncio.run(service.delete("p1", first.id))


def test_the_stream_is_openais_event_sequence() -> None:
    service = ResponseService(ScriptedBackend(), InMemoryStore())

    async def events() -> list[dict[str, Any]]:
        return [e async for e in service.stream("p", {"model": "m", "input": "a b c", "stream": True, "store": True})]

    got = asyncio.run(events())
    kinds = [e["type"] for e in got]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    deltas = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    final = got[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == deltas == "echo: a b c"
    assert got[0]["response"]["status"] == "in_progress" and got[0]["response"]["output"] == []
    assert service.store.get_response(final["id"], "p") is not None, "a stored stream is kept when it completes"


class BreaksOff(ScriptedBackend):
    """Streams a word, then loses the upstream."""

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        yield StreamDelta("half ")
        raise UpstreamUnreachableError("The upstream closed the connection.")


def test_a_stream_that_breaks_off_ends_with_error_and_failed_events() -> None:
    service = ResponseService(BreaksOff(), InMemoryStore())

    async def events() -> list[dict[str, Any]]:
        return [e async for e in service.stream("p", {"model": "m", "input": "x", "stream": True})]

    got = asyncio.run(events())
    assert [e["type"] for e in got][-3:] == ["response.output_text.delta", "error", "response.failed"]
    assert got[-2]["code"] == "upstream_unreachable"
    failed = got[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_unreachable"
    assert [e["sequence_number"] for e in got] == list(range(len(got)))


class NativeUpstream(ScriptedBackend):
    """An upstream's own /v1/responses stream: three events, the last with the usage (as
    the openai-compat backend reads one), priced as the router prices it; `fail_after`
    events, it loses the upstream instead; with `refuse`, it refuses the request."""

    def __init__(self, fail_after: int | None = None, refuse: bool = False):
        super().__init__()
        self.fail_after, self.refuse = fail_after, refuse
        self.got: list[BackendRequest] = []

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        self.got.append(request)
        if self.refuse:
            error = {"message": "no such reasoning effort", "type": "invalid_request_error", "param": "reasoning.effort"}  # fmt: skip
            raise BackendRejectedError(BackendResponse(400, {"error": error}))
        response = {"id": "resp_up", "object": "response", "created_at": 5, "status": "in_progress", "output": []}
        done = {**response, "status": "completed", "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}], "usage": {"input_tokens": 3, "output_tokens": 1}}  # fmt: skip
        text = {"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi", "own": 1}
        completed = {"type": "response.completed", "sequence_number": 2, "response": done}
        deltas = [
            StreamDelta("", event={"type": "response.created", "sequence_number": 0, "response": response}),
            StreamDelta("hi", event=text),
            StreamDelta("", "completed", 3, 1, event=completed, cost=0.5),
        ]
        for i, delta in enumerate(deltas):
            if i == self.fail_after:
                raise UpstreamUnreachableError("The upstream closed the connection.")
            yield delta


def _native_stream(backend: NativeUpstream, body: dict[str, Any]) -> tuple[ResponseService, list[dict[str, Any]]]:
    service = ResponseService(ResponsesBackend(backend, lambda model: True), InMemoryStore(), native=lambda m: True)

    async def events() -> list[dict[str, Any]]:
        return [e async for e in service.stream("p", body)]

    return service, asyncio.run(events())


def test_a_native_stream_is_the_upstreams_own_events_priced_and_stored() -> None:
    upstream = NativeUpstream()
    body = {"model": "m", "input": "x", "stream": True, "store": True, "reasoning": {"effort": "high"}}
    service, got = _native_stream(upstream, body)
    (request,) = upstream.got
    assert request.url == RESPONSES and request.body == body and request.interactive  # as it came
    assert [e["type"] for e in got] == ["response.created", "response.output_text.delta", "response.completed"]
    assert got[1] == {"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi", "own": 1}
    assert got[0]["response"].get("cost") is None and got[2]["response"]["cost"] == 0.5
    stored = service.store.get_response("resp_up", "p")
    assert stored is not None and stored.native and stored.response == got[2]["response"]
    assert stored.messages == [{"role": "user", "content": "x"}, {"role": "assistant", "content": "hi"}]


def test_a_native_stream_refused_raises_and_one_that_breaks_off_ends_with_an_error_event() -> None:
    with pytest.raises(BackendRejectedError) as refused:
        _native_stream(NativeUpstream(refuse=True), {"model": "m", "input": "x", "stream": True})
    assert refused.value.param == "reasoning.effort", "a native refusal names the Responses parameter as it is"
    with pytest.raises(UpstreamUnreachableError):  # before its first event: an HTTP error
        _native_stream(NativeUpstream(fail_after=0), {"model": "m", "input": "x", "stream": True})
    service, got = _native_stream(NativeUpstream(fail_after=2), {"model": "m", "input": "x", "stream": True, "store": True})  # fmt: skip
    assert [e["type"] for e in got] == ["response.created", "response.output_text.delta", "error"]
    assert got[-1]["code"] == "upstream_unreachable" and got[-1]["sequence_number"] == 2
    assert service.store.get_response("resp_up", "p") is None, "kept only when it completes"


class Chunks:
    """What `_sse_events` reads from an aiohttp response: its body in chunks."""

    def __init__(self, *chunks: bytes):
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def test_an_upstreams_server_sent_events_are_read_in_chunks_of_any_size() -> None:
    from batchgate.engines.openai_compat.backend import _sse_events

    long = "x" * 300_000  # over aiohttp's line limit: a final response can be
    body = (
        b'event: response.created\r\ndata: {"type": "response.created", "sequence_number": 0}\r\n\r\n'
        b'event: response.output_text.delta\ndata: {"sequence_number": 1, "delta": "' + long.encode() + b'"}\n\n'
        b": a comment\n\ndata: [DONE]\n\n"
        b'data: {"type": "response.completed", "sequence_number": 2}'  # the last, without its blank line
    )

    async def read(chunk: int) -> list[dict[str, Any]]:
        pieces = [body[at : at + chunk] for at in range(0, len(body), chunk)]
        return [event async for event in _sse_events(Chunks(*pieces))]  # type: ignore[arg-type]

    for size in (1_000_000, 7, 65_536):
        got = asyncio.run(read(size))
        assert [e["type"] for e in got] == ["response.created", "response.output_text.delta", "response.completed"]
        assert got[1]["delta"] == long and [e["sequence_number"] for e in got] == [0, 1, 2]
