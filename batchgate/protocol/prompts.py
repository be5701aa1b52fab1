"""/v1/prompts: prompt templates and their versions (a batchgate API, not OpenAI's).

The field `model_config` keeps its wire name through an alias: pydantic reserves it.
Messages and model_config are checked by core (it names the message and key at fault).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batchgate.protocol.fields import documented

SLUG_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"

TemplateMessages = Annotated[
    Any,
    documented(
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["system", "user", "assistant", "developer"]},
                    "content": {"type": "string", "description": "Text with {{variable}} placeholders."},
                },
            },
        },
        "The messages, with {{variable}} placeholders.",
    ),
]
ModelConfig = Annotated[
    Any,
    documented(
        {"type": "object", "description": "Request defaults (model, temperature, max_tokens, response_format, …)."},
    ),
]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, populate_by_name=True, protected_namespaces=())


class PromptCreate(_Wire):
    """The body of POST /v1/prompts. With `messages`, version 1 is created and published."""

    slug: str = Field(json_schema_extra={"pattern": SLUG_PATTERN})
    name: str | None = None
    description: str | None = None
    messages: TemplateMessages = None
    config: ModelConfig = Field(None, alias="model_config")


class PromptVersionCreate(_Wire):
    """The body of POST /v1/prompts/{slug}/versions."""

    messages: TemplateMessages
    config: ModelConfig = Field(None, alias="model_config")
    publish: bool = False


class PromptLinesRequest(_Wire):
    """The body of POST /v1/prompts/{slug}/jsonl: one batch line per variable set."""

    variables: Annotated[Any, documented({"type": "array", "minItems": 1, "items": {"type": "object"}})]
    version: int | None = Field(
        None, ge=1, le=2**63 - 1, description="The version to pin; the published one when absent."
    )


class PromptVersionObject(_Wire):
    object: Literal["prompt.version"] = "prompt.version"
    slug: str
    version: int
    messages: list[dict[str, Any]]
    config: dict[str, Any] = Field(alias="model_config")
    variables: list[str] = Field(description="The variables the messages use, in order of first use.")
    created_at: int


class Prompt(_Wire):
    object: Literal["prompt"] = "prompt"
    slug: str
    name: str
    description: str
    created_at: int
    published_version: int | None


class PromptWithPublished(Prompt):
    """A prompt with its published version (GET /v1/prompts/{slug})."""

    published: PromptVersionObject | None


class PromptList(_Wire):
    object: Literal["list"] = "list"
    data: list[Prompt]


class PromptVersionList(_Wire):
    object: Literal["list"] = "list"
    data: list[PromptVersionObject]
