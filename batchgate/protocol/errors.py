"""The error body every endpoint answers with: OpenAI's `{"error": {...}}`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a person.")
    type: str = Field(
        description="The error's class: invalid_request_error, rate_limit_error, server_error, upstream_error, …"
    )
    param: str | None = Field(default=None, description="The parameter (or line field) at fault, when there is one.")
    code: str | None = Field(
        default=None, description="A stable machine-readable code, e.g. missing_required_parameter."
    )


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail
