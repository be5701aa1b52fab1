"""Tool calling on the local engine without a model: request checks (each refusal names
its field), the grammar's shape per tool_choice, parsing of the model's calls and the
prompt written for chat templates with and without tool support."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchgate.core.errors import InvalidRequestError
from batchgate.core.ids import IdSequence
from batchgate.engines.local.tools import CALL_CLOSE, CALL_OPEN, parse_calls, prompt_messages, tool_use

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 3}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": []}, "tools"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "function"}]}, "tools[1].function"),
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools[0].function.parameters",
        ),
        (
            {
                "tools": [
                    CLOCK,
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
                        },
                    },
                ]
            },
            "tools[1].function.parameters.properties.n",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"$ref": "#/nope"}}},
                        },
                    }
                ]
            },
            "tools[0].function.parameters",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tool_use(body(**fields))
    assert info.value.param == param and info.value.status == 400


def test_no_tools_or_tool_choice_none_put_nothing_in_play() -> None:
    assert tool_use(body()) is None
    assert tool_use(body(tool_choice="none")) is None
    assert tool_use(body(tools=[WEATHER], tool_choice="none")) is None


def rules(grammar: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in grammar.splitlines())


def test_the_grammar_per_tool_choice() -> None:
    auto = rules(tool_use(body(tools=[WEATHER, CLOCK])).grammar)  # type: ignore[union-attr]
    assert auto["root"] == 'tool-call ("\\n" tool-call){0,7} | answer'  # parallel by default
    assert "get_weather" in auto["tool-call"] and "get_time" in auto["tool-call"]
    assert auto["tool-0-arguments-days"] == '"1" | "2" | "3"'  # bounds enforced as an enum
    assert auto["answer"].startswith('("<" | "<t"')  # text that does not begin with <tool_call>
    single = rules(tool_use(body(tools=[WEATHER, CLOCK], parallel_tool_calls=False)).grammar)  # type: ignore[union-attr]
    assert single["root"] == "tool-call | answer"
    required = rules(tool_use(body(tools=[WEATHER, CLOCK], tool_choice="required")).grammar)  # type: ignore[union-attr]
    assert required["root"] == 'tool-call ("\\n" tool-call){0,7}' and "answer" not in required
    choice = {"type": "function", "function": {"name": "get_time"}}
    named = rules(tool_use(body(tools=[WEATHER, CLOCK], tool_choice=choice)).grammar)  # type: ignore[union-attr]
    assert named["root"] == "tool-call" and "get_weather" not in named["tool-call"]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    structured = rules(tool_use(body(tools=[CLOCK], response_format=response_format)).grammar)  # type: ignore[union-attr]
    assert structured["answer"].startswith('"{" space answer-answer-kv')  # the answer is the schema's JSON


def test_same_named_definitions_of_two_tools_stay_apart() -> None:
    def tool(name: str, item: dict[str, Any]) -> dict[str, Any]:
        parameters = {"type": "object", "properties": {"x": {"$ref": "#/$defs/item"}}, "$defs": {"item": item}}
        return {"type": "function", "function": {"name": name, "parameters": parameters}}

    grammar = rules(tool_use(body(tools=[tool("a", {"type": "string"}), tool("b", {"enum": [1, 2]})])).grammar)  # type: ignore[union-attr]
    # (llama-cpp-python's converter named both rules "item": b's x would have been a string)
    assert grammar["tool-0-arguments-x"] == "string"
    assert grammar["tool-1-arguments-x"] == "tool-1-arguments-defs-item"
    assert grammar["tool-1-arguments-defs-item"] == '"1" | "2"'


def test_calls_are_parsed_into_openai_tool_calls() -> None:
    ids = IdSequence("call_")
    one = CALL_OPEN + '{"name": "get_weather", "arguments": {"city": "Paris"} }' + CALL_CLOSE
    two = one + "\n" + CALL_OPEN + '{"name": "get_time", "arguments": {}}' + CALL_CLOSE
    calls = parse_calls(two, ids)
    assert calls is not None and [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == 2
    # cut off by max_tokens: complete calls are kept, the unfinished one dropped
    assert parse_calls(one + "\n" + CALL_OPEN + '{"name": "get_ti', ids) is not None
    assert len(parse_calls(one + "\n" + CALL_OPEN + '{"name": "get_ti', ids) or []) == 1
    assert parse_calls(CALL_OPEN + '{"name": "get_weather", "argu', ids) is None
    assert parse_calls("It is sunny in Paris.", ids) is None


HISTORY = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
]


def test_history_for_a_template_without_tool_support() -> None:
    use = tool_use(body(tools=[WEATHER]))
    messages, tools = prompt_messages(HISTORY, use, native=False)
    assert tools is None  # described in the system message instead
    system, user, assistant, results = messages
    assert system["role"] == "system" and '"name": "get_weather"' in system["content"]
    assert "<tool_call>" in system["content"] and user == HISTORY[0]
    assert assistant == {
        "role": "assistant",
        "content": CALL_OPEN
        + '{"name": "get_weather", "arguments": {"city": "Paris"}}'
        + CALL_CLOSE
        + "\n"
        + CALL_OPEN
        + '{"name": "get_weather", "arguments": {"city": "Rome"}}'
        + CALL_CLOSE,
    }
    # both results in one user turn, as Qwen2.5's template writes them
    assert results == {
        "role": "user",
        "content": "<tool_response>\n18C\n</tool_response>\n<tool_response>\n21C\n</tool_response>",
    }
    # an existing system message keeps its text, the tools follow it
    with_system, _ = prompt_messages([{"role": "system", "content": "Be brief."}, HISTORY[0]], use, native=False)
    assert with_system[0]["content"].startswith("Be brief.\n\n# Tools")
    # without tools in play the history is still written out, with no tool instructions
    plain, _ = prompt_messages(HISTORY, None, native=False)
    assert plain[0] == HISTORY[0] and "<tool_call>" in plain[1]["content"]


def test_history_for_a_template_with_tool_support() -> None:
    use = tool_use(body(tools=[WEATHER]))
    messages, tools = prompt_messages(HISTORY, use, native=True)
    assert tools == [WEATHER]
    calls = messages[1]["tool_calls"]
    # the Hugging Face convention: arguments as objects; ids kept for templates that use them
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert [c["id"] for c in calls] == ["call_1", "call_2"]
    assert messages[2:] == HISTORY[2:]


def test_malformed_history_calls_are_refused_naming_the_message() -> None:
    broken = [HISTORY[0], {"role": "assistant", "tool_calls": [{"type": "function"}]}]
    with pytest.raises(InvalidRequestError) as info:
        prompt_messages(broken, None, native=False)
    assert info.value.param == "messages[1].tool_calls[0].function.name"
