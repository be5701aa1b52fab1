"""/v1/logs and /v1/usage: the ledger's rows and their sums (a batchgate API).

A key reads its own project's; an `admin` key reads every project's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LogEntry(BaseModel):
    object: Literal["log"] = "log"
    id: str = Field(description="A cursor: pass it as `before` for the next (older) page.")
    kind: Literal["sync", "batch"]
    project_id: str
    key_id: str | None
    batch_id: str | None
    line: int | None = Field(description="The batch line's number.")
    endpoint: str
    model: str | None = Field(description="The model asked for.")
    resolved_model: str | None = Field(description="The model that answered.")
    backend: str | None
    input_tokens: int
    output_tokens: int
    cost: float = Field(description="USD, the batch discount applied.")
    latency_ms: int
    status_code: int | None
    error_code: str | None
    started_at: float
    finished_at: float


class LogDetail(LogEntry):
    """A log row with the bodies its project chose to keep (null: not kept)."""

    request_body: str | None = Field(default=None, description="The request's body as sent (UTF-8 text).")
    response_body: str | None = Field(default=None, description="The answer's body (a stream's events as sent).")
    request_body_truncated: bool = Field(default=False, description="Cut at the project's body_cap_bytes.")
    response_body_truncated: bool = Field(default=False, description="Cut at the project's body_cap_bytes.")


class LogList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LogEntry]
    has_more: bool
    last_id: str | None = None


class UsageTotals(BaseModel):
    requests: int
    input_tokens: int
    output_tokens: int
    cost: float = Field(description="USD, batch lines at their discount.")


class UsageBucket(BaseModel):
    object: Literal["usage.bucket"] = "usage.bucket"
    start_time: int = Field(description="The bucket's first second (epoch, UTC).")
    end_time: int = Field(description="The next bucket's first second.")
    group: dict[str, str | None] = Field(description="The value of each `group_by` name.")
    sync: UsageTotals
    batch: UsageTotals


class UsageReport(BaseModel):
    object: Literal["list"] = "list"
    bucket: Literal["hour", "day", "month"]
    group_by: list[str]
    data: list[UsageBucket]
