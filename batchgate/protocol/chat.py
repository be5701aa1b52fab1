"""POST /v1/chat/completions: the request, the completion and its stream chunks, field
for field with OpenAI's (openai-python `types.chat`).

Requests are checked here for what OpenAI itself defines (types, ranges, enums); the
engine checks what only it knows (its context size, which schemas it can enforce).
Unknown request fields pass through to the backend, and answers keep any field an
upstream adds, so a newer OpenAI parameter or response field is never lost on the way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from batchgate.protocol.completions import CompletionUsage, GenerationRequest
from batchgate.protocol.fields import documented, unless_null

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# content is a string or an array of parts (text, image_url, input_audio, file, refusal)
MessageContent = Annotated[
    Any,
    documented(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object", "properties": {"type": {"type": "string"}}}},
                {"type": "null"},
            ]
        },
        "The message text, or an array of content parts.",
    ),
]


class ChatMessageParam(BaseModel):
    """One message of the conversation sent."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Role
    content: MessageContent = None
    name: str | None = None
    tool_call_id: str | None = None


class ChatResponseFormat(BaseModel):
    """`{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(GenerationRequest):
    """The body of POST /v1/chat/completions (`client.chat.completions.create`)."""

    messages: list[ChatMessageParam] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ChatResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Annotated[Any, documented({"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]})] = (
        None
    )


# ---- the answer ----------------------------------------------------------------------


class TopLogprob(BaseModel):
    model_config = ConfigDict(extra="allow")

    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatCompletionTokenLogprob(BaseModel):
    model_config = ConfigDict(extra="allow")

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    model_config = ConfigDict(extra="allow")

    content: list[ChatCompletionTokenLogprob] | None = None


class Function(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: str = Field(description="The arguments, a JSON object encoded as a string.")


class ChatCompletionMessageToolCall(BaseModel):
    """A function call the model made (the gateway does not run it)."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: Literal["function"] = "function"
    function: Function


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    # as OpenAI answers: `tool_calls` only on a message that makes calls
    tool_calls: list[ChatCompletionMessageToolCall] | None = unless_null()


class ChatCompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: ChatCompletionMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    """A chat completion: `chat.completion`."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage | None = None


# ---- the stream ----------------------------------------------------------------------


class ChoiceDelta(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # as OpenAI streams them: a delta names only what it adds (the last one is {})
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatCompletionChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    delta: ChoiceDelta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion: `chat.completion.chunk`. The
    last one carries `usage` (and no choices) when `stream_options.include_usage` asks."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: CompletionUsage | None = unless_null("Only in the last chunk, with `stream_options.include_usage`.")
