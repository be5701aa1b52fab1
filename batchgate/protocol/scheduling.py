"""GET /v1/admin/scheduling and POST /v1/admin/projects/{project}/weight (extensions):
the adaptive concurrency of each upstream and the projects' share weights."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UpstreamConcurrencyObject(BaseModel):
    name: str
    limit: int = Field(description="Requests this gateway lets in flight to the upstream now (AIMD).")
    max_limit: int = Field(description="The configured max_concurrency: the limit never goes above it.")
    in_flight: int
    waiting_interactive: int = Field(description="Synchronous requests waiting for a slot (they go first).")
    waiting_batch: int = Field(description="Batch lines waiting for a slot.")
    batch_paused_for: float = Field(description="Seconds left of a Retry-After pause of batch admissions.")


class ProjectWeight(BaseModel):
    project_id: str
    name: str
    weight: float


class SchedulingObject(BaseModel):
    object: Literal["scheduling"] = "scheduling"
    upstreams: list[UpstreamConcurrencyObject]
    projects: list[ProjectWeight]


class ProjectWeightUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    weight: float = Field(gt=0, le=1000, description="The project's share of batch capacity relative to others (1).")
