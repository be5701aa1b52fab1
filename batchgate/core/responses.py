"""The Responses API on the chat-completions path every backend implements.

A `/v1/responses` request is translated into a chat completion request, run as one, and
its answer translated back into a `response` object:

| Responses                                   | chat completions                              |
|---------------------------------------------|-----------------------------------------------|
| `instructions`                              | a first `system` message                      |
| `input` string                              | one `user` message                            |
| message items (`developer` role → `system`) | messages, `input_text`/`output_text` parts joined |
| `function_call` / `function_call_output`    | assistant `tool_calls` / `tool` messages      |
| `max_output_tokens`                         | `max_tokens`                                  |
| `text.format` (json_object, json_schema)    | `response_format`                             |
| `tools` (`function`), `tool_choice`         | `tools` (`{"type": "function", "function"}`), `tool_choice` |
| answer text / `tool_calls`                  | `message` / `function_call` output items      |
| `finish_reason: length`                     | `status: incomplete`, `max_output_tokens`     |

Whatever has no chat equivalent the engines honour (built-in tools, images and files,
reasoning effort, background mode, …) is refused with a 400 naming the parameter. The
engine's own refusals are renamed to the Responses parameter (`response_format` →
`text.format`, …), so the caller reads the name of what it sent.

Models whose upstreams serve `/v1/responses` themselves (`responses = "native"` in
batchgate.toml, `RoutingConfig.native_responses`) skip the translation: the request goes
to the upstream as it came, the model renamed, and its answer comes back as the upstream
wrote it, with the tokens metered and the route's `cost` added. Streamed too (`stream:
true`): the upstream's own events go out as it wrote them (`StreamDelta.event`), the
tokens metered from its last one (`response.completed`), whose response gets the `cost`.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from pydantic import ValidationError

from batchgate.core.errors import BackendRejectedError, InvalidRequestError
from batchgate.core.ids import new_id
from batchgate.core.ports import Backend, BackendRequest, BackendResponse, StreamDelta
from batchgate.protocol import responses as wire

RESPONSES = "/v1/responses"
CHAT = "/v1/chat/completions"
INPUT_TEXT_PARTS = ("input_text", "output_text", "text")

# the chat parameter an engine names → the Responses parameter the caller sent
_RENAMED = [
    (re.compile(r"^messages"), "input"),
    (re.compile(r"^max_(completion_)?tokens"), "max_output_tokens"),
    (re.compile(r"^response_format\.json_schema"), "text.format"),
    (re.compile(r"^response_format"), "text.format"),
    (re.compile(r"^(tools\[\d+\])\.function"), r"\1"),
    (re.compile(r"^tool_choice\.function"), "tool_choice"),
]


def never(model: str) -> bool:
    return False


def refused(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _unsupported(param: str, what: str) -> InvalidRequestError:
    return refused(f"'{param}' is not supported: {what}", param, "unsupported_parameter")


@dataclass(slots=True)
class Translated:
    """A Responses request and the chat request it runs as."""

    request: wire.ResponseCreateRequest
    chat: dict[str, Any]
    messages: list[dict[str, Any]]  # the conversation, without the instructions (kept by `store`)


def parse(body: dict[str, Any]) -> wire.ResponseCreateRequest:
    """The request, or a 400 naming the first parameter at fault."""
    try:
        request = wire.ResponseCreateRequest.model_validate(body)
    except ValidationError as exc:
        problem = exc.errors()[0]
        loc = problem.get("loc", ())
        param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
        if problem["type"] == "extra_forbidden":
            raise _unsupported(str(param), "batchgate does not know this parameter.") from None
        raise refused(f"Invalid '{param}': {problem['msg']}.", param) from None
    _refuse_unsupported(request)
    return request


def _refuse_unsupported(r: wire.ResponseCreateRequest) -> None:
    if r.input is None:
        raise refused("'input' is required.", "input", "missing_required_parameter")
    if r.reasoning is not None and (r.reasoning.effort or r.reasoning.summary or r.reasoning.generate_summary):
        raise _unsupported("reasoning", "the models batchgate serves are not reasoning models.")
    if r.include:
        raise _unsupported("include", "no extra output data (logprobs, reasoning, tool results) is available.")
    if r.background:
        raise _unsupported("background", "responses run in the foreground (use a batch for background work).")
    if r.conversation is not None:
        raise _unsupported("conversation", "use 'previous_response_id' with 'store': true.")
    if r.prompt is not None:
        raise _unsupported("prompt", "OpenAI prompt objects are not available here.")
    if r.max_tool_calls is not None:
        raise _unsupported("max_tool_calls", "the gateway does not run tools.")
    if r.top_logprobs:
        raise _unsupported("top_logprobs", "logprobs are available on /v1/chat/completions.")
    if r.stream_options is not None and not r.stream:
        raise refused("'stream_options' needs 'stream': true.", "stream_options")
    if r.text is not None and r.text.verbosity not in (None, "medium"):
        raise _unsupported("text.verbosity", "only the default, medium, is available.")
    for i, tool in enumerate(r.tools or []):
        if tool.get("type") != "function":
            raise _unsupported(f"tools[{i}].type", f"tool type {tool.get('type')!r}: only 'function' tools are.")
    choice = r.tool_choice
    if isinstance(choice, dict) and choice.get("type") != "function":
        raise _unsupported("tool_choice.type", f"tool choice {choice.get('type')!r}: only 'function' is.")
    if r.metadata is not None and (
        len(r.metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in r.metadata.items())
    ):
        raise refused("'metadata' holds at most 16 pairs, keys up to 64 characters, values up to 512.", "metadata")


def translate(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> Translated:
    """The chat request a Responses request runs as; `history` is the conversation of the
    response it continues (`previous_response_id`)."""
    request = parse(body)
    messages = [*(history or []), *_messages(request.input)]
    chat: dict[str, Any] = {"model": request.model}
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    chat["messages"] = system + messages
    if request.max_output_tokens is not None:
        chat["max_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if (value := getattr(request, name)) is not None:
            chat[name] = value
    if request.text is not None and request.text.format is not None:
        chat["response_format"] = _response_format(request.text.format)
    if request.tools:
        chat["tools"] = [_chat_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        choice = request.tool_choice
        chat["tool_choice"] = (
            {"type": "function", "function": {"name": choice.get("name")}} if isinstance(choice, dict) else choice
        )
    return Translated(request, chat, messages)


def _response_format(fmt: wire.TextFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    if fmt.schema_ is None:
        raise refused("'text.format.schema' is required for type 'json_schema'.", "text.format.schema")
    if not fmt.name:
        raise refused("'text.format.name' is required for type 'json_schema'.", "text.format.name")
    spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    if fmt.description is not None:
        spec["description"] = fmt.description
    return {"type": "json_schema", "json_schema": spec}


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    # Responses flattens the function into the tool; chat nests it under `function`
    function = {k: v for k, v in tool.items() if k != "type"}
    return {"type": "function", "function": function}


def _messages(input_: Any) -> list[dict[str, Any]]:
    if isinstance(input_, str):
        return [{"role": "user", "content": input_}]
    if not isinstance(input_, list) or not input_:
        raise refused("'input' must be a string or a non-empty array of input items.", "input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(input_):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise refused(f"'{at}' must be an object.", at)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise refused(f"'{at}.role' must be user, assistant, system or developer.", f"{at}.role")
            content = _text(item.get("content"), f"{at}.content")
            messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", at),
                "type": "function",
                "function": {"name": _string(item, "name", at), "arguments": _string(item, "arguments", at)},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # consecutive calls are one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                output = _text(output, f"{at}.output")
            messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", at), "content": output})
        else:
            raise _unsupported(
                f"{at}.type", f"input items of type {kind!r}: only message, function_call and function_call_output are."
            )
    return messages


def _string(item: dict[str, Any], key: str, at: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise refused(f"'{at}.{key}' must be a string.", f"{at}.{key}")
    return value


def _text(content: Any, at: str) -> str:
    """A message's text: a string, or its text parts joined (the engines take text only)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise refused(f"'{at}' must be a string or an array of content parts.", at)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in INPUT_TEXT_PARTS:
            raise _unsupported(f"{at}[{j}].type", f"content parts of type {kind!r}: the engines take text only.")
        texts.append(_string(part, "text", f"{at}[{j}]"))
    return "".join(texts)


# ---- input items ---------------------------------------------------------------------


def input_items(input_: Any) -> list[dict[str, Any]]:
    """A request's `input` as OpenAI lists it back (GET /v1/responses/{id}/input_items):
    each item with an id (its own, or a new one), messages' text as `input_text` parts
    (an assistant's as `output_text`). Items of other types, which only a native upstream
    takes, are kept as they came, with an id."""
    if isinstance(input_, str):
        input_ = [{"role": "user", "content": input_}]
    items: list[dict[str, Any]] = []
    for item in input_ if isinstance(input_, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            items.append(_message_item(item))
        elif kind in ("function_call", "function_call_output"):
            prefix = "fc_" if kind == "function_call" else "fco_"
            fields = ("call_id", "name", "arguments") if kind == "function_call" else ("call_id", "output")
            items.append(
                {"id": item.get("id") or new_id(prefix), "type": kind, **{k: item.get(k) for k in fields}}
                | {"status": "completed"}
            )
        else:
            items.append({**item, "id": item.get("id") or new_id("item_")})
    return items


def _message_item(item: dict[str, Any]) -> dict[str, Any]:
    role, content = item.get("role"), item.get("content")
    parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else list(content or [])
    if role == "assistant":  # an earlier answer: an output message
        parts = [
            {"type": "output_text", "text": p.get("text", ""), "annotations": [], "logprobs": []}
            for p in parts
            if isinstance(p, dict) and p.get("type") in INPUT_TEXT_PARTS
        ]
    else:
        parts = [{**p, "type": "input_text"} if p.get("type") == "text" else p for p in parts if isinstance(p, dict)]
    return {
        "id": item.get("id") or new_id("msg_"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": parts,
    }


def items_page(
    items: list[dict[str, Any]], after: str | None, limit: int, order: str
) -> tuple[list[dict[str, Any]], bool]:
    """A page of input items in `order` (`asc`: as given), starting after the item `after`;
    and whether more follow."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise refused(f"No input item {after!r} in this response.", "after")
        start = ids.index(after) + 1
    page = ordered[start : start + limit]
    return page, start + limit < len(ordered)


def renamed(param: str | None) -> str | None:
    """The Responses name of a chat parameter an engine refused."""
    if param is None:
        return None
    for pattern, name in _RENAMED:
        if pattern.match(param):
            return pattern.sub(name, param, count=1)
    return param


def rename_refusal(exc: BackendRejectedError) -> BackendRejectedError:
    """The same refusal, naming the Responses parameter."""
    error = exc.response.body.get("error") if isinstance(exc.response.body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("param"), str):
        return exc
    body = {**exc.response.body, "error": {**error, "param": renamed(error["param"])}}
    return BackendRejectedError(replace(exc.response, body=body), retry_after=exc.retry_after)


def as_rejection(exc: InvalidRequestError) -> BackendRejectedError:
    """A refusal as a backend's 400 answer: a batch line records it in its error file."""
    return BackendRejectedError(BackendResponse(exc.status, exc.body()))


# ---- the answer ----------------------------------------------------------------------


def response_object(
    t: Translated,
    answer: BackendResponse,
    response_id: str,
    created_at: int,
    store: bool = False,
) -> wire.Response:
    """The `response` a chat answer makes."""
    choice = answer.body["choices"][0]
    message = choice.get("message") or {}
    status = answer_status(choice.get("finish_reason"))
    output: list[wire.OutputMessage | wire.FunctionCall] = []
    if message.get("content"):
        output.append(output_message(message["content"], status))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            wire.FunctionCall(
                id=new_id("fc_"),
                call_id=call["id"],
                name=function.get("name", ""),
                arguments=function.get("arguments", "{}"),
            )
        )
    start = base_response(t, response_id, created_at, store)
    return ended(
        start,
        status,
        output,
        answer.input_tokens,
        answer.output_tokens,
        model=answer.model or t.request.model,
        cost=answer.cost or None,
    )


def answer_status(finish_reason: str | None) -> str:
    """A response's status from its answer's finish: cut at the token limit, or whole."""
    return "incomplete" if finish_reason == "length" else "completed"


def ended(
    start: wire.Response,
    status: str,
    output: Sequence[wire.OutputMessage | wire.FunctionCall],
    input_tokens: int,
    output_tokens: int,
    **fields: Any,
) -> wire.Response:
    """`start` (see `base_response`) as it ends, with `output`, whether answered whole or
    streamed: status, completion time, why it is incomplete, usage; `fields` besides."""
    usage = wire.ResponseUsage(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )
    return start.model_copy(
        update={
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "incomplete_details": wire.IncompleteDetails(reason="max_output_tokens")
            if status == "incomplete"
            else None,
            "output": list(output),
            "usage": usage,
            **fields,
        }
    )


def output_message(text: str, status: str, item_id: str | None = None) -> wire.OutputMessage:
    return wire.OutputMessage(
        id=item_id or new_id("msg_"),
        status=status,  # type: ignore[arg-type]
        content=[wire.OutputText(text=text)],
    )


def base_response(t: Translated, response_id: str, created_at: int, store: bool) -> wire.Response:
    """The response before any output: what `response.created` announces."""
    r = t.request
    fmt = r.text.format.model_dump(by_alias=True, exclude_none=True) if r.text and r.text.format else {"type": "text"}
    return wire.Response(
        id=response_id,
        created_at=created_at,
        status="in_progress",
        instructions=r.instructions,
        max_output_tokens=r.max_output_tokens,
        model=r.model,
        output=[],
        parallel_tool_calls=r.parallel_tool_calls if r.parallel_tool_calls is not None else True,
        previous_response_id=r.previous_response_id,
        store=store,
        temperature=r.temperature if r.temperature is not None else 1.0,
        top_p=r.top_p if r.top_p is not None else 1.0,
        text={"format": fmt},
        tool_choice=r.tool_choice if r.tool_choice is not None else "auto",
        tools=r.tools or [],
        user=r.user,
        metadata=r.metadata or {},
        cost=None,
    )


def conversation(t: Translated, response: wire.Response) -> list[dict[str, Any]]:
    """The conversation a later response continues: this one's messages and its answer."""
    text = "".join(c.text for item in response.output if isinstance(item, wire.OutputMessage) for c in item.content)
    calls = [
        {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
        for item in response.output
        if isinstance(item, wire.FunctionCall)
    ]
    answer: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        answer["tool_calls"] = calls
    return [*t.messages, answer]


def native_conversation(history: list[dict[str, Any]], input_: Any, response: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation a translated response continues from a natively answered one: as
    far as it is in chat terms (text and function calls; other items are left out)."""
    try:
        messages = _messages(input_)
    except InvalidRequestError:
        messages = []
    text, calls = [], []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            text += [p.get("text", "") for p in item.get("content") or () if p.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            calls.append({"id": item.get("call_id"), "type": "function", "function": function})
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        answer["tool_calls"] = calls
    return [*history, *messages, answer]


def native_answer(answer: BackendResponse) -> BackendResponse:
    """An upstream's own response, with the route's cost when priced."""
    if answer.cost and isinstance(answer.body, dict):
        return replace(answer, body={**answer.body, "cost": answer.cost})
    return answer


def native_event(delta: StreamDelta) -> StreamDelta:
    """An upstream's own stream event; the last one's response (it has the usage) with the
    route's cost when priced."""
    response = delta.event.get("response") if delta.event is not None else None
    if delta.cost and delta.event is not None and isinstance(response, dict):
        return replace(delta, event={**delta.event, "response": {**response, "cost": delta.cost}})
    return delta


async def _native_events(deltas: AsyncIterator[StreamDelta]) -> AsyncIterator[StreamDelta]:
    async for delta in deltas:
        yield native_event(delta)


class ResponsesBackend:
    """A Backend that runs `/v1/responses` lines as chat completions on `inner` (batch
    lines: the synchronous endpoint goes through `ResponseService`, which also stores),
    or, for models `native` says are served natively, forwards them as they are. Every
    other line passes straight through."""

    def __init__(self, inner: Backend, native: Callable[[str], bool] = never):
        self.inner = inner
        self.name = inner.name
        self.native = native

    async def execute(self, request: BackendRequest) -> BackendResponse:
        if request.url != RESPONSES:
            return await self.inner.execute(request)
        if self.native(str(request.body.get("model"))):
            return await self._forward(request)
        try:
            t = translate(request.body)
            if t.request.stream:
                raise refused("Batch lines cannot stream: leave out 'stream'.", "stream")
            if t.request.store:
                raise _unsupported("store", "batch lines are not stored; use POST /v1/responses.")
            if t.request.previous_response_id is not None:
                raise _unsupported("previous_response_id", "batch lines cannot continue a stored response.")
        except InvalidRequestError as exc:
            raise as_rejection(exc) from None
        try:
            answer = await self.inner.execute(replace(request, url=CHAT, body=t.chat))
        except BackendRejectedError as exc:
            raise rename_refusal(exc) from None
        response = response_object(t, answer, new_id("resp_"), int(time.time()))
        body = orjson.loads(response.model_dump_json())
        return replace(answer, body=body)

    async def _forward(self, request: BackendRequest) -> BackendResponse:
        # a synchronous request (interactive) comes from ResponseService, which checked
        # that its previous_response_id is the project's; a batch line cannot name one
        # (nor could a translated line): another project's stored response is not its own
        if not request.interactive:
            for param in ("stream", "previous_response_id"):
                if request.body.get(param):
                    exc = _unsupported(param, "batch lines cannot stream or continue a stored response.")
                    raise as_rejection(exc)
        return native_answer(await self.inner.execute(request))

    def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        # a `/v1/responses` stream is a native upstream's own (ResponseService sends no other)
        deltas = self.inner.stream(request)
        return _native_events(deltas) if request.url == RESPONSES else deltas

    def models(self) -> list[str]:
        return self.inner.models()

    async def aclose(self) -> None:
        await self.inner.aclose()
