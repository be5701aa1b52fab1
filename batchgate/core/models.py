"""Domain records shared by core, store and api. Plain dataclasses: no I/O here."""

from __future__ import annotations

import enum
import re
from array import array
from dataclasses import dataclass, field
from typing import Any, get_args

# the statuses are defined with their transitions, in core/states.py
from batchgate.core.states import ACTIVE_STATUSES, PAUSABLE_STATUSES, BatchStatus, JobKind, RequestState
from batchgate.protocol.openai import UPSTREAM_ENDPOINT_PATTERN, UPSTREAM_ENDPOINTS_REFUSED, BatchEndpoint


class FilePurpose(enum.StrEnum):
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"  # both result files, as OpenAI (there is no "batch_errors")


BATCH_ENDPOINTS: tuple[str, ...] = get_args(BatchEndpoint)


def is_batch_endpoint(endpoint: str) -> bool:
    """One every backend answers, or another `/v1/...` endpoint for upstream-routed models."""
    if endpoint in BATCH_ENDPOINTS:
        return True
    refused = any(endpoint == p or endpoint.startswith(p + "/") for p in UPSTREAM_ENDPOINTS_REFUSED)
    return not refused and re.fullmatch(UPSTREAM_ENDPOINT_PATTERN, endpoint) is not None


@dataclass(slots=True)
class Project:
    id: str
    name: str
    created_at: int


# what a key may do: run batches (files, batches, their operations), call the synchronous
# model endpoints, read (list, retrieve, logs, usage), administer keys and projects
SCOPES = ("batch", "sync", "read", "admin")
DEFAULT_SCOPES = ("batch", "sync", "read")


# what a rate limit counts: requests, prompt tokens, completion tokens, or both token kinds
LIMIT_KINDS = ("requests", "input_tokens", "output_tokens", "total_tokens")
# the period a budget is spent over; "total": never renews
BUDGET_PERIODS = ("day", "week", "month", "total")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` of `kind` (one of LIMIT_KINDS) in any rolling `window_s` seconds:
    a burst of `limit`, refilled at `limit / window_s` per second (core/ratelimit.py)."""

    kind: str
    limit: int
    window_s: int


@dataclass(slots=True)
class ApiKey:
    id: str
    project_id: str
    name: str
    prefix: str
    created_at: int
    revoked_at: int | None = None
    project_name: str = ""
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    allowed_models: tuple[str, ...] | None = None  # None: any model
    expires_at: int | None = None  # epoch seconds; None: never
    limits: tuple[RateLimit, ...] = ()  # each holds on its own; none: unlimited
    max_parallel_requests: int | None = None  # synchronous requests and batch lines running at once
    budget_usd: float | None = None  # the hard limit per budget_period; None: no budget
    budget_period: str = "month"  # one of BUDGET_PERIODS
    budget_soft_usd: float | None = None  # reported when passed; spending goes on
    routing_profile: str | None = None  # a [profiles.NAME] of the routing config its requests resolve through


@dataclass(slots=True)
class FileRecord:
    id: str
    project_id: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None = None
    key_id: str | None = None  # the API key that created it (None: made by the server)


@dataclass(slots=True)
class BatchError:
    """One entry of a batch's `errors.data`: what is wrong, and on which line."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


@dataclass(slots=True)
class BatchRecord:
    id: str
    project_id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    errors: list[BatchError] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0  # USD, summed over the lines so far
    priority: int = 0
    source: str = "openai"
    # native passthrough: the upstream whose own Batch API runs this batch, and the id there
    upstream: str | None = None
    upstream_batch_id: str | None = None
    # an operation batch (source "operation"): the operation and the file of its items
    operation: dict[str, Any] | None = None
    # seconds after their creation that the output and error files expire (None: kept)
    output_expires_after: int | None = None
    key_id: str | None = None  # the API key that created it: its lines are metered to it
    paused_at: int | None = None  # paused by its owner (core/states.py): no line is claimed
    # paused because its key spent its budget (core/budgets.py): no line is claimed until
    # the period renews or the budget is raised; set and cleared by the workers
    budget_paused_at: int | None = None

    @property
    def paused(self) -> bool:
        """Paused now: a pause outlives neither a cancel nor the batch's end."""
        return self.paused_at is not None and self.status in PAUSABLE_STATUSES

    def needs_file(self, file_id: str) -> bool:
        """Whether the file cannot be deleted for this batch's sake: its input until it
        ends; every file of an operation batch (its input, items, output and error files)
        for as long as it exists, since its output pages are read from them. The stores'
        SQL (`file_in_use`, `delete_file`) says the same."""
        if self.source == "operation":
            items = self.operation.get("items_file_id") if self.operation else None
            return file_id in (self.input_file_id, items, self.output_file_id, self.error_file_id)
        return file_id == self.input_file_id and self.status in ACTIVE_STATUSES


@dataclass(slots=True)
class PromptVersion:
    """Messages with `{{variable}}` placeholders, and defaults for the request body."""

    slug: str
    version: int
    messages: list[dict[str, Any]]
    model_config: dict[str, Any]
    created_at: int


@dataclass(slots=True)
class PromptRecord:
    project_id: str
    slug: str
    name: str
    description: str
    created_at: int
    published_version: int | None = None


@dataclass(slots=True)
class StoredResponse:
    """A `response` created with `store: true`, and the conversation a later response
    continues from it with `previous_response_id` (chat messages, without instructions)."""

    id: str
    project_id: str
    created_at: int
    response: dict[str, Any]
    messages: list[dict[str, Any]]
    # the request's input as OpenAI's input items (GET /v1/responses/{id}/input_items)
    input_items: list[dict[str, Any]] = field(default_factory=list)
    native: bool = False  # answered by an upstream's own /v1/responses (which also keeps it)


# A chunk of a batch's line index, written by validation: a flat array("q") of
# (line number, byte offset, byte length) triples, one per request line, in input order.
LineIndex = array


@dataclass(slots=True)
class ClaimedRequest:
    """A request row a worker has claimed to run (its custom_id is read with its line)."""

    batch_id: str
    input_file_id: str
    endpoint: str
    line: int
    offset: int
    length: int
    attempts: int
    project_id: str = ""  # the batch's: batch lines of different projects take turns at a backend


@dataclass(slots=True)
class RequestResult:
    """The outcome of running one request row; written back by the worker.

    `state` is SUCCEEDED (goes to the output file) or FAILED (goes to the error file).
    A failed line carries either an HTTP-like `status_code` + `body` from the backend,
    or only `error_code` + `error_message` when no response was produced.
    """

    batch_id: str
    line: int
    state: RequestState
    attempts: int
    request_id: str
    custom_id: str | None = None  # None when the line was never read (abandoned on cancel)
    status_code: int | None = None
    body: bytes | None = None
    error_code: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_ms: int = 0
    backend: str | None = None
    model: str | None = None
    requested_model: str | None = None  # the line's `model` (the ledger's "asked for")


@dataclass(slots=True)
class FinishedRow:
    """A terminal request row as the finalizer reads it, in line order. `custom_id` is
    None for a line that never ran; the finalizer reads it from the input at offset."""

    line: int
    custom_id: str | None
    offset: int
    length: int
    state: RequestState
    request_id: str | None
    status_code: int | None
    body: bytes | None
    error_code: str | None
    error_message: str | None
    cost: float = 0.0


@dataclass(slots=True)
class BatchJob:
    """Batch-level work a worker claimed: validate, or settle and finalize."""

    kind: JobKind
    batch: BatchRecord
    owner: str  # the worker that claimed it; the job's writes check it still holds it
