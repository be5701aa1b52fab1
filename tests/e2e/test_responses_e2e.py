"""The Responses API through the official `openai` client, against a real server on the
local engine (smollm2-135m): plain, structured, streamed, tool calls, stored responses
continued with previous_response_id, refusals naming the parameter, and a batch of
/v1/responses lines read back with client.files.content."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import jsonschema
import openai
import pytest
from openai import OpenAI
from support import TERMINAL, Server, jsonl, parse_jsonl

MODEL = "smollm2-135m"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": MODEL, "BATCHGATE_SETTLE_GRACE": "0.5"}
    server = Server(tmp_path_factory.mktemp("data"), env).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=server.create_key("responses"), max_retries=0, timeout=120)


def test_plain_response(client: OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        instructions="Answer in one short sentence.",
        input="What is the capital of France?",
        max_output_tokens=24,
        temperature=0,
        metadata={"team": "growth"},
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.model == MODEL
    assert response.output_text.strip(), "the answer's text"
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert 0 < response.usage.output_tokens <= 24
    assert response.metadata == {"team": "growth"} and response.instructions == "Answer in one short sentence."
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)  # not stored: store defaults to false


def test_structured_output_follows_the_schema(client: OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input="Invent a person: a name and an age.",
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
        max_output_tokens=60,
        temperature=0,
    )
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), PERSON)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_streamed_events_add_up_to_the_answer(client: OpenAI) -> None:
    events = list(
        client.responses.create(model=MODEL, input="Count from one to five.", max_output_tokens=20, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    final = events[-1].response  # type: ignore[union-attr]
    assert deltas and deltas == done.text == final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0


def test_tool_call_then_its_result_through_a_stored_response(client: OpenAI) -> None:
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Lisbon?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,  # one call, so it finishes well inside max_output_tokens
        temperature=0,
        max_output_tokens=60,
        store=True,
    )
    assert first.status == "completed"
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    assert client.responses.retrieve(first.id).model_dump() == first.model_dump()
    # the result goes back as a function_call_output item, continuing the stored response
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        temperature=0,
        max_output_tokens=24,
    )
    assert second.previous_response_id == first.id and second.output_text.strip()
    # the stored question and call were sent too: more input than the result alone
    alone = client.responses.create(model=MODEL, input="22C and sunny", max_output_tokens=1)
    assert second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens + 10
    # streamed with tools: the call arrives as function-call events
    events = list(
        client.responses.create(
            model=MODEL,
            input="What is the weather in Porto?",
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="required",
            parallel_tool_calls=False,
            max_output_tokens=60,
            stream=True,
        )
    )
    arguments = next(e for e in events if e.type == "response.function_call_arguments.done")
    jsonschema.validate(json.loads(arguments.arguments), WEATHER["parameters"])
    assert events[-1].type == "response.completed"
    assert client.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
         "input[0].content[0].type"),
        ({"extra_body": {"frequency_penalty": 1}}, "frequency_penalty"),
    ],
)  # fmt: skip
def test_what_the_engines_cannot_do_is_refused_by_name(client: OpenAI, extra: dict, param: str) -> None:
    args = {"model": MODEL, "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(**args)
    assert refused.value.param == param  # type: ignore[attr-defined]


def test_a_previous_response_of_another_project_is_not_found(server: Server, client: OpenAI) -> None:
    stored = client.responses.create(model=MODEL, input="hi", max_output_tokens=4, store=True)
    other = OpenAI(base_url=server.url + "/v1", api_key=server.create_key("other"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError) as missing:
        other.responses.create(model=MODEL, input="more", previous_response_id=stored.id)
    assert missing.value.param == "previous_response_id"  # type: ignore[attr-defined]


def test_a_batch_of_responses_lines(client: OpenAI) -> None:
    def line(custom_id: str, **body: object) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": {"model": MODEL, **body}}

    rows = [
        line("plain", input="Name a colour.", max_output_tokens=8),
        line(
            "json",
            input="Invent a person.",
            max_output_tokens=60,
            text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}},
        ),
        line("image", input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]),
    ]
    file = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/responses", completion_window="24h")
    deadline = time.time() + 300
    while batch.status not in TERMINAL:
        assert time.time() < deadline, batch.status
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.endpoint == "/v1/responses"
    assert batch.request_counts is not None and (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    assert batch.output_file_id and batch.error_file_id
    output = {r["custom_id"]: r for r in parse_jsonl(client.files.content(batch.output_file_id).content)}
    for row in output.values():
        assert row["response"]["status_code"] == 200 and row["error"] is None
        body = row["response"]["body"]
        assert body["object"] == "response" and body["output"][0]["type"] == "message"
        assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
    answer = output["json"]["response"]["body"]["output"][0]["content"][0]["text"]
    jsonschema.validate(json.loads(answer), PERSON)
    (error,) = parse_jsonl(client.files.content(batch.error_file_id).content)
    assert error["custom_id"] == "image" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "input[0].content[0].type"
