"""POST /v1/embeddings, field for field with OpenAI's (openai-python `types.CreateEmbeddingResponse`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batchgate.protocol.fields import documented

EmbeddingInput = Annotated[
    Any,
    documented(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 2048},
                {"type": "array", "items": {"type": "integer"}},
                {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            ]
        },
        "The text to embed, or an array of texts (the local engine takes strings; upstreams may take token arrays).",
    ),
]


class EmbeddingRequest(BaseModel):
    """The body of POST /v1/embeddings (`client.embeddings.create`)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="`base64`: little-endian float32 vectors, base64-encoded (the openai SDK's default)."
    )
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class Embedding(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="The vector, or with `encoding_format: base64` its float32 bytes.")


class EmbeddingUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
