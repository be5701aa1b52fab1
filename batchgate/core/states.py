"""The batch state machine: the statuses of batches and request rows, the moves allowed
between them, and the batch-level jobs each status needs.

Core decides; stores apply. A store moves a row only from the source states these
tables give for the target (the SQLite store builds its `WHERE status IN (...)` from
them, the in-memory store checks the same sets), so the rules live here once.

Batches (the OpenAI lifecycle):
    validating -> in_progress -> finalizing -> completed
    validating -> failed
    in_progress -> expired
    validating | in_progress -> cancelling -> cancelled
Request rows (one per input line, created when the line is first claimed or settled;
a line without a row is waiting, like a queued row):
    queued -> running -> succeeded | failed | cancelled | expired
    running -> queued                  (its worker died: the row is requeued)
    queued -> cancelled | expired      (settled without running)

Pause (an extension, POST /v1/batches/{id}/pause|resume) is not a status: a paused
batch keeps its status (`validating` or `in_progress`; the official `openai` client's
`Batch.status` is a closed Literal) and carries `paused_at`. Workers claim no line of
it (lines already running finish); its batch jobs still run, so it still validates,
expires at the end of its window (the window is absolute and keeps running while
paused, as OpenAI's `expires_at`) and can be cancelled.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from batchgate.core.models import BatchRecord


class BatchStatus(enum.StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class RequestState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class JobKind(enum.StrEnum):
    """Batch-level work a worker claims (one worker at a time per batch)."""

    VALIDATE = "validate"  # read the input, write the line index, start or fail the batch
    FINALIZE = "finalize"  # write the result files, end the batch completed
    CANCEL = "cancel"  # settle unfinished lines as cancelled, then finalize
    EXPIRE = "expire"  # settle unfinished lines as expired, then finalize
    NATIVE = "native"  # submit to / poll an upstream's own Batch API


_B, _R = BatchStatus, RequestState

BATCH_TRANSITIONS: Mapping[BatchStatus, frozenset[BatchStatus]] = MappingProxyType(
    {
        _B.VALIDATING: frozenset({_B.IN_PROGRESS, _B.FAILED, _B.CANCELLING}),
        _B.IN_PROGRESS: frozenset({_B.FINALIZING, _B.EXPIRED, _B.CANCELLING}),
        _B.FINALIZING: frozenset({_B.COMPLETED}),
        _B.CANCELLING: frozenset({_B.CANCELLED}),
        _B.COMPLETED: frozenset(),
        _B.FAILED: frozenset(),
        _B.EXPIRED: frozenset(),
        _B.CANCELLED: frozenset(),
    }
)

REQUEST_TRANSITIONS: Mapping[RequestState, frozenset[RequestState]] = MappingProxyType(
    {
        _R.QUEUED: frozenset({_R.RUNNING, _R.CANCELLED, _R.EXPIRED}),
        _R.RUNNING: frozenset({_R.QUEUED, _R.SUCCEEDED, _R.FAILED, _R.CANCELLED, _R.EXPIRED}),
        _R.SUCCEEDED: frozenset(),
        _R.FAILED: frozenset(),
        _R.CANCELLED: frozenset(),
        _R.EXPIRED: frozenset(),
    }
)

TERMINAL_STATUSES = frozenset(s for s, moves in BATCH_TRANSITIONS.items() if not moves)
ACTIVE_STATUSES = frozenset(BatchStatus) - TERMINAL_STATUSES
# the status whose lines workers claim and run
RUNNABLE_STATUS = BatchStatus.IN_PROGRESS
# statuses in which a batch may be paused (and stays paused); outside them a pause is
# refused, and a paused batch that leaves them (cancel, expiry) no longer counts as paused
PAUSABLE_STATUSES = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})
# a finished batch: its failed lines may be retried as a new batch
RETRYABLE_STATUSES = TERMINAL_STATUSES
# Validation hands over a batch's lines (their count, the claim cursor) while it still
# validates, or when it was cancelled while it validated: its lines are then settled
# as cancelled, so the error file still has one line per input line.
ACCEPTS_LINES = frozenset({BatchStatus.VALIDATING, BatchStatus.CANCELLING})

DONE_STATES = frozenset(s for s, moves in REQUEST_TRANSITIONS.items() if not moves)
UNFINISHED_STATES = frozenset(RequestState) - DONE_STATES
# what a worker's result makes of the row it ran (not a requeue: that is the reaper's)
RESULT_STATES = REQUEST_TRANSITIONS[RequestState.RUNNING] & DONE_STATES

# statuses that always need a job; an in_progress batch needs one only when its window
# ended (expire) or it runs on an upstream's Batch API (native): see `job_kind`
JOB_OF_STATUS: Mapping[BatchStatus, JobKind] = MappingProxyType(
    {
        BatchStatus.VALIDATING: JobKind.VALIDATE,
        BatchStatus.FINALIZING: JobKind.FINALIZE,
        BatchStatus.CANCELLING: JobKind.CANCEL,
    }
)


def batch_sources(target: BatchStatus) -> frozenset[BatchStatus]:
    """The statuses a batch may move to `target` from (empty: nothing leads there)."""
    return _BATCH_SOURCES[target]


def request_sources(target: RequestState) -> frozenset[RequestState]:
    """The states a request row may move to `target` from."""
    return _REQUEST_SOURCES[target]


def settle_sources(target: RequestState, include_running: bool) -> frozenset[RequestState]:
    """The rows a cancel or an expiry settles as `target`: waiting ones, and with
    `include_running` also rows still running (after the grace given to other workers).
    ValueError unless `target` is a final state that waiting lines may move to."""
    sources = request_sources(target)
    if target not in DONE_STATES or RequestState.QUEUED not in sources:
        raise ValueError(f"unfinished lines cannot be settled as {target.value}")
    return sources if include_running else sources - {RequestState.RUNNING}


def job_kind(batch: BatchRecord, now: int) -> JobKind | None:
    """The batch-level job a batch needs at time `now`, or None."""
    if batch.status == RUNNABLE_STATUS:
        if batch.expires_at <= now:
            return JobKind.EXPIRE
        return JobKind.NATIVE if batch.upstream is not None else None
    return JOB_OF_STATUS.get(batch.status)


S = TypeVar("S", BatchStatus, RequestState)


def _sources(table: Mapping[S, frozenset[S]]) -> Mapping[S, frozenset[S]]:
    """The table read backwards: for each state, the states that may move to it."""
    return MappingProxyType({target: frozenset(s for s, moves in table.items() if target in moves) for target in table})


_BATCH_SOURCES = _sources(BATCH_TRANSITIONS)
_REQUEST_SOURCES = _sources(REQUEST_TRANSITIONS)
