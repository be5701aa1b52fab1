"""OpenAI Files and Batches API shapes, field for field (openai-python `types.FileObject`,
`types.Batch`), with batchgate's additions marked."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

FilePurpose = Literal["batch", "batch_output"]
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
# any other endpoint an upstream serves (e.g. /v1/moderations): lines are forwarded as they are
UPSTREAM_ENDPOINT_PATTERN = r"^/v1(/[a-z0-9][a-z0-9_-]*)+$"  # no dots: never a path out of /v1
# the upstream's own state (its files, batches, stores, …) is not for batch lines: they
# reach the upstream with the gateway's credentials, shared by every project
UPSTREAM_ENDPOINTS_REFUSED = (
    "/v1/files", "/v1/uploads", "/v1/batches", "/v1/fine_tuning", "/v1/vector_stores", "/v1/assistants",
    "/v1/threads", "/v1/organization", "/v1/containers", "/v1/conversations", "/v1/evals", "/v1/realtime",
    "/v1/models",
)  # fmt: skip
# the endpoint of a batch: one every backend answers, or another of an upstream's
Endpoint = Annotated[
    str,
    Field(
        pattern=UPSTREAM_ENDPOINT_PATTERN,
        examples=list(get_args(BatchEndpoint)),
        description="`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` or `/v1/responses` (every "
        "backend), or another endpoint of the upstream the lines' models route to (e.g. `/v1/moderations`), "
        "forwarded as is; the local engine answers each line of such an endpoint with a 400 naming the url.",
    ),
]
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]


class ExpiresAfter(BaseModel):
    """When a file expires: `seconds` (1 hour to 30 days) after its creation."""

    model_config = ConfigDict(strict=True)

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class FileUpload(BaseModel):
    """The multipart/form-data body of POST /v1/files (streamed to disk as it arrives)."""

    file: bytes = Field(description="The file: JSONL, one request per line.")
    purpose: Literal["batch"]
    expires_after: ExpiresAfter | None = Field(
        None,
        description="Sent as the form fields `expires_after[anchor]` (`created_at`) and `expires_after[seconds]`; "
        "the file is deleted once expired (unless a batch that has not ended reads it).",
    )


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchErrorData(BaseModel):
    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorData]


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})
    cost: float = 0.0  # batchgate: USD so far, from the routing config's prices (0 when unpriced)


class Batch(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: Endpoint
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    usage: BatchUsage
    metadata: dict[str, str] | None = None
    paused_at: int | None = Field(
        None,
        description="Extension: when the batch was paused (POST /v1/batches/{id}/pause); null unless paused "
        "now. A paused batch keeps its status (validating or in_progress) and its expires_at.",
    )
    rate_limited_until: int | None = Field(
        default=None,
        description="Extension: while the batch's lines wait for the rate limits of the key that created it "
        "(they are paced, not failed), the time (epoch seconds) until which they are held back at least; "
        "refreshed while they wait, null otherwise.",
    )
    pacing: str | None = Field(
        default=None, description="Extension: why the lines wait (the limit and its window), with rate_limited_until."
    )
    at_risk: bool | None = Field(
        None,
        description="Extension: true while the batch is in progress and, at its throughput so far (lines done "
        "per second since it started), would not finish before `expires_at`; such batches are claimed first, "
        "earliest deadline first. With no line done yet: true in the last tenth of the completion window.",
    )
    paused_reason: str | None = Field(
        None,
        description="Extension: why no line of the batch is running now: `budget_exhausted` while the key "
        "that created it has spent its budget (it resumes by itself when the period renews or the budget "
        "is raised; cancel still works).",
    )


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchCreate(BaseModel):
    """The body of POST /v1/batches (`client.batches.create`)."""

    model_config = ConfigDict(strict=True)

    input_file_id: str = Field(description="A file of your project with purpose `batch`.")
    endpoint: Endpoint
    completion_window: str = Field(
        "24h",
        json_schema_extra={"pattern": r"^\s*[0-9]+\s*[smhd]\s*$"},  # checked by core, which says what is wrong
        description="A duration `<n>s/m/h/d` up to 365 days: `24h` as OpenAI, or `30m`, `72h`, …",
    )
    metadata: dict[str, str] | None = Field(
        None, description="At most 16 pairs; keys up to 64 characters, values up to 512."
    )
    output_expires_after: ExpiresAfter | None = Field(
        None, description="When the output and error files expire (default: the server's retention for them)."
    )
