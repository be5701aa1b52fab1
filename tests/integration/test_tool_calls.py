"""Tool calling on the local engine with a real model (smollm2-135m): every call parses
and validates against its tool's schema (jsonschema), for 20 tool definitions; each
tool_choice; a batch line through the batch path; the official openai client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from support import Server, jsonl, parse_jsonl, wait_for

from batchgate.core.errors import BackendRejectedError
from batchgate.core.ports import BackendRequest, BackendResponse
from batchgate.engines.local.backend import LocalBackend
from batchgate.engines.local.catalog import ModelCatalog

MODEL = "smollm2-135m"


def tool(name: str, description: str, properties: dict[str, Any], required: list[str], **extra: Any) -> dict:
    parameters = {"type": "object", "properties": properties, "required": required, **extra}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def text(max_length: int = 40) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length}


WEATHER = tool(
    "get_weather",
    "The current weather in a city.",
    {"city": text(), "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    ["city"],
)
STOCK = tool(
    "get_stock_price",
    "The last price of a stock.",
    {"ticker": {"type": "string", "pattern": "^[A-Z]{1,5}$"}},
    ["ticker"],
)
USER = tool(
    "create_user",
    "Create a user account.",
    {
        "name": text(),
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "roles": {"type": "array", "items": {"type": "string", "enum": ["admin", "editor", "viewer"]}, "maxItems": 3},
    },
    ["name", "age"],
)


def item_tool(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """Two tools with a same-named $defs entry of different content."""
    return tool(
        name, f"Store an {name} item.", {"item": {"$ref": "#/$defs/item"}}, ["item"], **{"$defs": {"item": item}}
    )


# (tools, user message, tool_choice): 20 definitions, from one string argument to nested
# objects, arrays, enums, bounded integers, patterns, formats, $refs and several tools at once
CASES: list[tuple[list[dict[str, Any]], str, Any]] = [
    ([WEATHER], "What is the weather in Paris?", "required"),
    (
        [
            tool(
                "send_email",
                "Send an email.",
                {"to": text(), "subject": text(60), "body": text(120)},
                ["to", "subject", "body"],
            )
        ],
        "Email bob@example.com that the meeting moved to 3pm.",
        "required",
    ),
    (
        [
            tool(
                "set_thermostat",
                "Set the thermostat.",
                {
                    "temperature": {"type": "integer", "minimum": 10, "maximum": 30},
                    "mode": {"enum": ["heat", "cool", "auto"]},
                },
                ["temperature"],
            )
        ],
        "Make it 21 degrees and cool the room.",
        "required",
    ),
    (
        [
            tool(
                "create_event",
                "Add a calendar event.",
                {
                    "title": text(),
                    "date": {"type": "string", "format": "date"},
                    "attendees": {"type": "array", "items": text(), "maxItems": 4},
                },
                ["title", "date"],
            )
        ],
        "Put lunch with Ana on 2025-03-14 in my calendar.",
        "required",
    ),
    (
        [
            tool(
                "book_flight",
                "Book a flight.",
                {
                    "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
                    "destination": {"type": "string", "pattern": "^[A-Z]{3}$"},
                    "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
                    "cabin": {"type": "string", "enum": ["economy", "business", "first"]},
                },
                ["origin", "destination", "passengers"],
            )
        ],
        "Book 2 seats from JFK to LHR in business.",
        "required",
    ),
    (
        [
            tool(
                "add_to_cart",
                "Add an item to the cart.",
                {
                    "item": {
                        "type": "object",
                        "properties": {"sku": text(12), "quantity": {"type": "integer", "minimum": 1, "maximum": 10}},
                        "required": ["sku", "quantity"],
                    }
                },
                ["item"],
            )
        ],
        "Add three of SKU A-1001 to my cart.",
        "required",
    ),
    (
        [
            tool(
                "search_products",
                "Search the catalog.",
                {
                    "query": text(),
                    "filters": {
                        "type": "object",
                        "properties": {"max_price": {"type": "number"}, "in_stock": {"type": "boolean"}},
                    },
                    "sort": {"enum": ["price", "rating", "newest"]},
                },
                ["query"],
            )
        ],
        "Find running shoes under 80 dollars that are in stock, cheapest first.",
        "required",
    ),
    (
        [
            tool(
                "translate",
                "Translate a text.",
                {"text": text(80), "target_language": {"enum": ["fr", "de", "es", "it"]}},
                ["text", "target_language"],
            )
        ],
        "Translate 'good morning' into German.",
        "required",
    ),
    (
        [
            tool(
                "convert_currency",
                "Convert an amount between currencies.",
                {
                    "amount": {"type": "number"},
                    "from": {"enum": ["USD", "EUR", "GBP"]},
                    "to": {"enum": ["USD", "EUR", "GBP"]},
                },
                ["amount", "from", "to"],
            )
        ],
        "How much is 100 dollars in euros?",
        "required",
    ),
    (
        [
            tool(
                "rate_review",
                "Rate a product review.",
                {
                    "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                    "tags": {
                        "type": "array",
                        "items": {"enum": ["quality", "price", "shipping", "support"]},
                        "minItems": 1,
                        "maxItems": 3,
                    },
                },
                ["stars", "tags"],
            )
        ],
        "Review: 'Great quality, but shipping took forever.' Rate it.",
        "required",
    ),
    ([USER], "Create an account for Maria, 34, as an editor.", "required"),
    ([tool("get_time", "The current time.", {}, [])], "What time is it?", "required"),
    (
        [
            tool(
                "schedule_meeting",
                "Schedule a meeting.",
                {
                    "participants": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"name": text(20), "email": text()},
                            "required": ["name"],
                        },
                        "minItems": 1,
                        "maxItems": 3,
                    },
                    "duration_minutes": {"enum": [15, 30, 60]},
                },
                ["participants", "duration_minutes"],
            )
        ],
        "Set up a 30 minute meeting with Tom and Lea.",
        "required",
    ),
    (
        [
            tool(
                "set_alarm",
                "Set an alarm.",
                {
                    "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                    "minute": {"type": "integer", "minimum": 0, "maximum": 59},
                    "label": text(),
                },
                ["hour", "minute"],
            )
        ],
        "Wake me up at 6:45.",
        "required",
    ),
    (
        [
            tool(
                "lookup_order",
                "Find an order by id.",
                {"order_id": {"type": "string", "pattern": "^ORD-[0-9]{6}$"}},
                ["order_id"],
            )
        ],
        "Where is my order ORD-123456?",
        "required",
    ),
    (
        [
            tool(
                "update_settings",
                "Change app settings.",
                {
                    "settings": {
                        "type": "object",
                        "properties": {"dark_mode": {"type": "boolean"}, "notifications": {"type": "boolean"}},
                        "required": ["dark_mode", "notifications"],
                    }
                },
                ["settings"],
            )
        ],
        "Turn on dark mode and switch off notifications.",
        "required",
    ),
    (
        [
            tool(
                "calculate",
                "Do arithmetic.",
                {
                    "operation": {"enum": ["add", "subtract", "multiply", "divide"]},
                    "a": {"type": "number"},
                    "b": {"type": "number"},
                },
                ["operation", "a", "b"],
            )
        ],
        "What is 12 times 7?",
        "required",
    ),
    (
        [
            tool(
                "create_invoice",
                "Create an invoice.",
                {
                    "customer": {"$ref": "#/$defs/party"},
                    "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "minItems": 1, "maxItems": 2},
                },
                ["customer", "lines"],
                **{
                    "$defs": {
                        "party": {"type": "object", "properties": {"name": text(30)}, "required": ["name"]},
                        "line": {
                            "type": "object",
                            "properties": {
                                "description": text(30),
                                "amount": {"type": "integer", "minimum": 1, "maximum": 100},
                            },
                            "required": ["description", "amount"],
                        },
                    }
                },
            )
        ],
        "Invoice ACME for 2 hours of consulting at 50.",
        "required",
    ),
    # several tools at once: the model picks one, and its arguments match that tool
    ([WEATHER, STOCK, USER], "What is Apple's stock price?", "required"),
    # two tools whose $defs share a name; the named one must get its own definition
    (
        [
            item_tool("text", {"type": "string", "maxLength": 20}),
            item_tool("number", {"type": "integer", "minimum": 1, "maximum": 9}),
        ],
        "Store the number seven.",
        {"type": "function", "function": {"name": "number"}},
    ),
]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    backend = LocalBackend(
        ModelCatalog(tmp_path_factory.mktemp("models")), default_model=MODEL, slots=8, ctx_per_slot=1536
    )
    yield backend
    asyncio.run(backend.aclose())


def run(backend: LocalBackend, bodies: list[dict[str, Any]]) -> list[BackendResponse]:
    async def answer(body: dict[str, Any]) -> BackendResponse:
        try:
            return await backend.execute(BackendRequest("t", "/v1/chat/completions", body))
        except BackendRejectedError as exc:  # a refused request: its answer is the error
            return exc.response

    async def together() -> list[BackendResponse]:
        return list(await asyncio.gather(*(answer(b) for b in bodies)))

    return asyncio.run(together())


def chat(tools: list[dict[str, Any]] | None, question: str, **fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 160}
    return {**body, **({"tools": tools} if tools is not None else {}), **fields}


def assert_valid_calls(message: dict[str, Any], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each call names one of `tools` and its arguments validate against that tool's schema."""
    assert message["content"] is None and message["tool_calls"]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for call in message["tool_calls"]:
        assert call["id"].startswith("call_") and call["type"] == "function"
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, schemas[call["function"]["name"]], format_checker=jsonschema.FormatChecker())
    return message["tool_calls"]


def test_calls_parse_and_validate_for_20_tool_definitions(backend: LocalBackend) -> None:
    assert len(CASES) == 20
    bodies = [chat(tools, question, tool_choice=choice, parallel_tool_calls=False) for tools, question, choice in CASES]
    for (tools, question, choice), response in zip(CASES, run(backend, bodies), strict=True):
        assert response.status_code == 200, response.body
        choice_ = response.body["choices"][0]
        assert choice_["finish_reason"] == "tool_calls", (question, choice_)
        calls = assert_valid_calls(choice_["message"], tools)
        assert len(calls) == 1  # parallel_tool_calls: false
        if isinstance(choice, dict):
            assert calls[0]["function"]["name"] == choice["function"]["name"]


def test_tool_choice_variants(backend: LocalBackend) -> None:
    several = [WEATHER, STOCK]
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temperature": 18, "sky": "clear"}'},
    ]
    bodies = [
        chat(several, "What is the weather in Oslo and in Rome?", tool_choice="required"),  # parallel allowed
        chat(
            several,
            "What is the weather in Oslo?",
            tool_choice={"type": "function", "function": {"name": "get_stock_price"}},
        ),
        chat(several, "What is the weather in Oslo?", tool_choice="none"),
        chat(several, "What is the weather in Oslo?"),  # auto by default
        {**chat(several, ""), "messages": history},  # a tool result in the history: auto again
    ]
    required, named, none, auto, after_result = run(backend, bodies)
    assert required.body["choices"][0]["finish_reason"] in ("tool_calls", "length")
    assert 1 <= len(assert_valid_calls(required.body["choices"][0]["message"], several)) <= 8
    named_calls = assert_valid_calls(named.body["choices"][0]["message"], several)
    assert [c["function"]["name"] for c in named_calls] == ["get_stock_price"]
    assert none.body["choices"][0]["message"]["content"] and "tool_calls" not in none.body["choices"][0]["message"]
    for response in (auto, after_result):  # the model chose; either way its answer is well-formed
        choice = response.body["choices"][0]
        if choice["message"].get("tool_calls"):
            assert choice["finish_reason"] == "tool_calls"
            assert_valid_calls(choice["message"], several)
        else:
            assert isinstance(choice["message"]["content"], str)
            assert not choice["message"]["content"].startswith("<tool_call>")


def test_refusals_name_the_field(backend: LocalBackend) -> None:
    unbounded = tool("count", "Count.", {"n": {"type": "integer", "minimum": 0}}, ["n"])
    bodies = [
        chat([WEATHER, unbounded], "x"),
        chat([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], "x"),
        chat([WEATHER], "x", tool_choice={"type": "function", "function": {"name": "get_time"}}),
        chat([WEATHER], "x", functions=[{"name": "f"}]),
    ]
    params = [r.body["error"]["param"] for r in run(backend, bodies)]
    assert params == [
        "tools[1].function.parameters.properties.n",
        "tools[0].function.parameters",
        "tool_choice.function.name",
        "functions",
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": MODEL, "BATCHGATE_SETTLE_GRACE": "0.5"}
    server = Server(tmp_path_factory.mktemp("data"), env, insecure=True).start()
    yield server
    server.kill()


def test_tool_calls_in_a_batch(server: Server) -> None:
    import httpx

    c = httpx.Client(base_url=server.url + "/v1", timeout=60)
    bad_tool = tool("count", "Count.", {"n": {"type": "number", "minimum": 0, "maximum": 1}}, ["n"])

    def line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}

    rows = [
        line(f"call-{i}", chat(tools, question, tool_choice=choice, parallel_tool_calls=False))
        for i, (tools, question, choice) in enumerate(CASES[:4])
    ]
    rows.append(line("bad", chat([bad_tool], "x")))
    file_id = c.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    batch_id = c.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()["id"]
    batch = wait_for(lambda: (b := c.get(f"/batches/{batch_id}").json())["status"] == "completed" and b, 300, 0.2)
    assert batch["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    output = {
        r["custom_id"]: r["response"]["body"]
        for r in parse_jsonl(c.get(f"/files/{batch['output_file_id']}/content").content)
    }
    for i, (tools, _, _) in enumerate(CASES[:4]):
        choice = output[f"call-{i}"]["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert_valid_calls(choice["message"], tools)
    (error,) = parse_jsonl(c.get(f"/files/{batch['error_file_id']}/content").content)
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "tools[0].function.parameters.properties.n"


def test_the_openai_client_gets_typed_tool_calls(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    question = [{"role": "user", "content": "What is the weather in Lisbon?"}]
    reply = client.chat.completions.create(
        model=MODEL,
        messages=question,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=80,  # type: ignore[list-item,arg-type]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # the call and its result go back into the conversation, as a client loop does
    follow_up = client.chat.completions.create(
        model=MODEL,
        messages=[
            *question,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "22C and sunny"},
        ],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        temperature=0,
        max_tokens=24,
    )
    assert follow_up.choices[0].message.content and follow_up.choices[0].message.tool_calls is None
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=question, tools=[WEATHER], stream=True)  # type: ignore[list-item]
    assert refused.value.param == "stream"  # type: ignore[attr-defined]
