"""Reading batches and their request rows the way people browse them (the console):
batches of one project or of all, filtered, active ones first, paged by offset; a
batch's request rows in line order, filtered by state, paged by line."""

from __future__ import annotations

from dataclasses import dataclass

from batchgate.core.states import ACTIVE_STATUSES, BatchStatus, RequestState

# the batch kinds a search can ask for (`BatchRecord.source`)
BATCH_KINDS = ("openai", "operation", "agent", "swarm")


@dataclass(slots=True)
class BatchSearch:
    """Which batches to list. `project_id` None: every project (an admin). `model`: a
    batch with at least one metered line that asked for or resolved to it. Active
    batches (`ACTIVE_STATUSES`) come first, each group newest first."""

    project_id: str | None = None
    status: BatchStatus | None = None
    source: str | None = None
    key_id: str | None = None
    model: str | None = None
    offset: int = 0
    limit: int = 50


def is_active(status: BatchStatus) -> bool:
    return status in ACTIVE_STATUSES


@dataclass(slots=True)
class RequestRow:
    """One request row of a batch as people read it. Lines never claimed yet have none."""

    line: int
    custom_id: str | None
    state: RequestState
    attempts: int
    status_code: int | None
    error_code: str | None
    error_message: str | None
    input_tokens: int
    output_tokens: int
    cost: float
    latency_ms: int | None
    backend: str | None
    model: str | None
    body: bytes | None  # the answer (or the error answer), as the output file will hold it
