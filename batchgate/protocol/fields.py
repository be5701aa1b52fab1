"""Field helpers shared by the protocol models."""

from __future__ import annotations

from typing import Any

from pydantic import Field, WithJsonSchema


def documented(schema: dict[str, Any], description: str | None = None) -> WithJsonSchema:
    """For `Annotated[Any, documented(...)]`: a request field documented with `schema` but
    passed on unchecked. Used for unions (a string or an array of parts, …) that the
    engine checks: its error names the parameter better than a union's list of
    mismatches would."""
    return WithJsonSchema({**schema, "description": description} if description else schema)


def _is_none(value: object) -> bool:
    return value is None


def unless_null(description: str | None = None) -> Any:
    """A response field left out of the JSON while it is null, as OpenAI leaves out what
    does not apply (a chunk's usage before the last, usage details nobody counted)."""
    return Field(None, exclude_if=_is_none, description=description)
