"""Tool calling on the local engine: OpenAI `tools`, `tool_choice` and
`parallel_tool_calls` turned into a prompt and a grammar, and the model's answer back
into OpenAI `tool_calls`.

The model writes each call the way Qwen2.5 and Hermes models are trained to,

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

several calls one after another, a newline apart. A grammar built from the tools'
parameter schemas holds every call to a declared name and to arguments matching that
tool's schema, so arguments always parse and validate:

- `required`: one call of any tool; with `parallel_tool_calls` (the default) up to
  MAX_PARALLEL_CALLS of them.
- a named function: one call of that tool.
- `auto` (the default when tools are given): calls, or an answer that does not begin
  with `<tool_call>` (free text, or JSON matching `response_format`). The distinct
  prefix is what lets one grammar hold both: the model's first tokens choose.
- `none`: the tools are neither shown nor enforced.

Chat templates that render tools themselves (they mention `tools`, as Qwen2.5's does)
get the tools and the history as they are, with call arguments as objects (the Hugging
Face convention). For the others (SmolLM2's) the tools are described in the system
message in the same format, earlier calls are written into the assistant's turn as
above, and tool results go back as a user turn in `<tool_response>` tags.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from batchgate.core.errors import InvalidRequestError
from batchgate.core.ids import IdSequence
from batchgate.engines.local.grammar import GrammarBuilder, response_format_schema, with_enumerated_ranges

MAX_TOOLS = 128
MAX_PARALLEL_CALLS = 8
CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NO_PARAMETERS = {"type": "object", "properties": {}}

INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": '
    "<args-json-object>}}\n</tool_call>"
)


@dataclass(frozen=True, slots=True)
class ToolUse:
    """How one chat request uses its tools."""

    tools: list[dict[str, Any]]  # the validated definitions, shown to the model
    grammar: str  # what the model may answer: calls (or, with `auto`, an answer)


def bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_value")


def tool_use(body: dict[str, Any]) -> ToolUse | None:
    """The tools a chat request puts in play: None without tools or with `tool_choice: none`."""
    tools = _definitions(body.get("tools"))
    mode, name = _choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise bad("'parallel_tool_calls' must be a boolean.", "parallel_tool_calls")
    if mode == "none":
        return None
    return ToolUse(tools, _grammar(body, tools, mode, name, parallel))


def _definitions(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise bad(f"'tools' must be an array of 1 to {MAX_TOOLS} tool objects.", "tools")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise bad(f"'{at}.type' must be 'function'.", f"{at}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad(f"'{at}.function' must be an object.", f"{at}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise bad(f"'{at}.function.name' must be 1-64 letters, digits, '_' or '-'.", f"{at}.function.name")
        if name in names:
            raise bad(f"'{at}.function.name': another tool is already named {name!r}.", f"{at}.function.name")
        names.add(name)
        parameters = function.get("parameters", _NO_PARAMETERS)
        # arguments are a JSON object on the wire, so the schema must describe one
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise bad(
                f"'{at}.function.parameters' must be a JSON Schema with type 'object'.", f"{at}.function.parameters"
            )
    return tools


def _choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(mode, function name) of `tool_choice`: mode is none, auto, required or function."""
    if choice is None:
        return ("auto" if tools else "none"), None
    if choice == "none":
        return "none", None
    if not tools:
        raise bad("'tool_choice' is only allowed when 'tools' are given.", "tool_choice")
    if choice in ("auto", "required"):
        return choice, None
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if not isinstance(function, dict):
        raise bad(
            "'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
            "tool_choice",
        )
    name = function.get("name")
    if name not in {t["function"]["name"] for t in tools}:
        raise bad(f"'tool_choice' names the function {name!r}, which is not in 'tools'.", "tool_choice.function.name")
    return "function", name


def _grammar(body: dict[str, Any], tools: list[dict[str, Any]], mode: str, name: str | None, parallel: bool) -> str:
    g = GrammarBuilder()
    calls = []
    for i, tool in enumerate(tools):  # every schema is checked, also those tool_choice leaves out
        function = tool["function"]
        at = f"tools[{i}].function.parameters"
        arguments = g.schema_rule(
            with_enumerated_ranges(function.get("parameters", _NO_PARAMETERS), at), f"tool-{i}-arguments", at
        )
        if name is None or function["name"] == name:
            head = g.literal('{"name": ' + json.dumps(function["name"]) + ', "arguments": ')
            calls.append(f'{head} {arguments} "}}"')
    call = g.rule("tool-call", f"{g.literal(CALL_OPEN)} ({' | '.join(calls)}) {g.literal(CALL_CLOSE)}")
    root = f'{call} ("\\n" {call}){{0,{MAX_PARALLEL_CALLS - 1}}}' if parallel and name is None else call
    if mode == "auto":
        schema = response_format_schema(body)
        if schema is None:
            answer = g.rule("answer", _text_not_starting_with(g, CALL_OPEN.strip()))
        else:
            path, param = "response_format.json_schema.schema", "response_format.json_schema"
            answer = g.schema_rule(with_enumerated_ranges(schema, path, param), "answer", param)
        root = f"{root} | {answer}"
    g.rule("root", root)
    return g.grammar()


def _text_not_starting_with(g: GrammarBuilder, prefix: str) -> str:
    """Any text (the empty one too) that does not begin with `prefix`: it stops short of
    it, or leaves it at some character and then goes on freely."""
    assert not set(prefix) & set("^]\\-"), "characters that would need escaping in a class"
    alternatives = [g.literal(prefix[:i]) for i in range(1, len(prefix))]
    for i, c in enumerate(prefix):
        alternatives.append(f"{g.literal(prefix[:i]) if i else ''} [^{c}] .*".strip())
    return f"({' | '.join(alternatives)})?"


def parse_calls(text: str, ids: IdSequence) -> list[dict[str, Any]] | None:
    """The OpenAI `tool_calls` in a generation, or None when it holds none (an `auto`
    answer, or cut off by max_tokens before the first call was complete). A call cut
    off after complete ones is dropped."""
    decoder, calls, at = json.JSONDecoder(), [], 0
    while text.startswith(CALL_OPEN, at):
        try:
            call, end = decoder.raw_decode(text, at + len(CALL_OPEN))
        except ValueError:
            break
        if not text.startswith(CALL_CLOSE, end):
            break
        arguments = json.dumps(call["arguments"], ensure_ascii=False)
        calls.append({"id": ids.next(), "type": "function", "function": {"name": call["name"], "arguments": arguments}})
        at = end + len(CALL_CLOSE) + 1  # the newline between calls
    return calls or None


def prompt_messages(
    messages: list[dict[str, Any]], use: ToolUse | None, native: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and tools to render with the chat template (`native`: it renders
    tools and tool turns itself)."""
    tools = use.tools if use is not None else None
    if native:
        return [_with_argument_objects(m, i) for i, m in enumerate(messages)], tools
    rendered: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            response = f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>"
            if i and messages[i - 1].get("role") == "tool":  # results of parallel calls: one turn
                rendered[-1]["content"] += "\n" + response
            else:
                rendered.append({"role": "user", "content": response})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [
                CALL_OPEN + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + CALL_CLOSE
                for name, arguments in _history_calls(message, i)
            ]
            content = _text(message.get("content"))
            rendered.append({"role": "assistant", "content": "\n".join([content, *calls] if content else calls)})
        else:
            rendered.append({**message, "content": _text(message.get("content"))})
    if tools:
        instructions = INSTRUCTIONS.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if rendered and rendered[0].get("role") == "system":
            rendered[0] = {**rendered[0], "content": f"{rendered[0]['content']}\n\n{instructions}"}
        else:
            rendered.insert(0, {"role": "system", "content": instructions})
    return rendered, None


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of an array."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def _history_calls(message: dict[str, Any], index: int) -> list[tuple[str, Any]]:
    """(name, arguments) of an assistant message's earlier calls; arguments that are a
    JSON string are decoded, others are kept as they are."""
    calls = message.get("tool_calls")
    param = f"messages[{index}].tool_calls"
    if not isinstance(calls, list):
        raise bad(f"'{param}' must be an array.", param)
    found = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad(f"'{param}[{j}].function.name' must be a string.", f"{param}[{j}].function.name")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            with contextlib.suppress(ValueError):  # not JSON: shown to the model as written
                arguments = json.loads(arguments)
        found.append((function["name"], arguments))
    return found


def _with_argument_objects(message: dict[str, Any], index: int) -> dict[str, Any]:
    if message.get("role") != "assistant" or not message.get("tool_calls"):
        return message
    calls = [
        {**call, "type": "function", "function": {"name": name, "arguments": arguments}}
        for call, (name, arguments) in zip(message["tool_calls"], _history_calls(message, index), strict=True)
    ]
    return {**message, "tool_calls": calls}
