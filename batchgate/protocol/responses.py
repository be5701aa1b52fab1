"""POST /v1/responses: the request, the response object and its stream events, field for
field with OpenAI's (openai-python `types.responses`), for what batchgate's engines do.

Requests are checked here for types and ranges, as OpenAI checks them. Unlike chat
requests, unknown fields are refused (`extra="forbid"`): a Responses request is
translated to a chat completion (core/responses.py), so a field the translation does not
know would otherwise be dropped on the way, silently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batchgate.protocol.fields import documented

ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]

Input = Annotated[
    Any,
    documented(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object", "properties": {"type": {"type": "string"}}}},
            ]
        },
        "A text input, or a list of input items: messages (role + content: a string or "
        "`input_text` parts), earlier `function_call` items and their `function_call_output`.",
    ),
]
ToolChoice = Annotated[
    Any,
    documented(
        {"anyOf": [{"type": "string", "enum": ["none", "auto", "required"]}, {"type": "object"}]},
        '`none`, `auto`, `required`, or `{"type": "function", "name": ...}`.',
    ),
]


class TextFormat(BaseModel):
    """`{"type": "text" | "json_object"}` or `{"type": "json_schema", "name", "schema", "strict"?, "description"?}`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponseCreateRequest(BaseModel):
    """The body of POST /v1/responses (`client.responses.create`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, description="A model name, an alias from batchgate.toml, or `default`.")
    input: Input = None
    instructions: str | None = Field(None, description="A system message put before the input (not carried over).")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = Field(None, description='Tools of `"type": "function"` only.')
    tool_choice: ToolChoice = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = Field(
        None, description="At most 16 pairs; keys up to 64 characters, values up to 512."
    )
    store: bool | None = Field(
        None, description="Keep the response for GET and `previous_response_id` (default false)."
    )
    previous_response_id: str | None = None
    stream: bool | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: Literal["auto", "default"] | None = None
    truncation: Literal["disabled"] | None = Field(None, description="Only `disabled`: input is never cut.")
    reasoning: Reasoning | None = Field(None, description="Refused when it asks for an effort or a summary.")
    # OpenAI parameters the engines cannot honour: declared so that a request naming them
    # is refused with a 400 naming the parameter (core/responses.py), not a generic error
    include: list[str] | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    max_tool_calls: int | None = None
    top_logprobs: int | None = None
    stream_options: dict[str, Any] | None = None


# ---- the response --------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    """An output item: the assistant's message."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class FunctionCall(BaseModel):
    """An output item: a function call the model made (the gateway does not run it)."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str = Field(description="The arguments, a JSON object encoded as a string.")
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


OutputItem = Annotated[OutputMessage | FunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(BaseModel):
    code: str
    message: str


class Response(BaseModel):
    """A model response: `response`."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    store: bool = False
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    cost: float | None = Field(None, exclude_if=lambda v: v is None, description="batchgate: USD, when priced.")


class InputTextPart(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class InputMessageItem(BaseModel):
    """An input item: a message from the user, the system or the developer."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer"]
    status: Literal["completed"] = "completed"
    content: list[InputTextPart | dict[str, Any]] = Field(
        description="`input_text` parts (other parts only as sent to an upstream that serves /v1/responses)."
    )


class FunctionCallOutputItem(BaseModel):
    """An input item: what a function call returned, sent back by the caller."""

    id: str
    type: Literal["function_call_output"] = "function_call_output"
    call_id: str
    output: str | list[Any]
    status: Literal["completed"] = "completed"


# an assistant message or a function call given as input keeps its output item's shape;
# items of other types reach only an upstream that serves /v1/responses, and are kept as sent
InputItem = InputMessageItem | OutputMessage | FunctionCall | FunctionCallOutputItem | dict[str, Any]


class InputItemList(BaseModel):
    """GET /v1/responses/{id}/input_items (`client.responses.input_items.list`): the input
    items of a stored response, a cursor page as OpenAI's."""

    object: Literal["list"] = "list"
    data: list[InputItem]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


# ---- the stream ----------------------------------------------------------------------


class StreamEvent(BaseModel):
    """One server-sent event of a streamed response (`event: <type>` + `data: <this>`).
    The other fields depend on `type`, as in openai-python's `ResponseStreamEvent`."""

    model_config = ConfigDict(extra="allow")

    type: Literal[
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
        "response.incomplete",
        "response.failed",
        "error",
    ]
    sequence_number: int
