"""POST /v1/completions (the legacy text completions), field for field with OpenAI's
(openai-python `types.Completion`), and the usage object chat completions share."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batchgate.protocol.fields import documented, unless_null

TextFinishReason = Literal["stop", "length", "content_filter"]

Prompt = Annotated[
    Any,
    documented(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
                {"type": "array", "items": {"type": "integer"}},
                {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            ]
        },
        "The prompt: a string (the local engine takes a string; upstreams may take the other forms).",
    ),
]
Stop = Annotated[
    Any,
    documented(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                {"type": "null"},
            ]
        },
        "Up to 4 sequences where generation stops; the stop sequence is not returned.",
    ),
]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = Field(None, description="Send a last chunk with the usage and no choices.")


class GenerationRequest(BaseModel):
    """What chat and text completion requests share: the model, sampling, stopping and
    streaming fields (each request adds its own)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, description="A model name, an alias from batchgate.toml, or `default`.")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: Stop = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None


class CompletionRequest(GenerationRequest):
    """The body of POST /v1/completions (`client.completions.create`)."""

    prompt: Prompt
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None


class PromptTokensDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    cached_tokens: int | None = None


class CompletionTokensDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    reasoning_tokens: int | None = None


class CompletionUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = unless_null()
    completion_tokens_details: CompletionTokensDetails | None = unless_null()


class Logprobs(BaseModel):
    """The legacy shape: parallel lists, one entry per token."""

    model_config = ConfigDict(extra="allow")

    tokens: list[str] | None = None
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] | None = None


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    text: str
    finish_reason: TextFinishReason | None
    logprobs: Logprobs | None = None


class Completion(BaseModel):
    """A text completion: `text_completion`. Streamed chunks have the same shape (as on
    OpenAI), with `finish_reason` null until the last."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = unless_null()
