"""The state machine's tables say what DESIGN.md's lifecycle says, edge for edge."""

from __future__ import annotations

import pytest

from batchgate.core.models import BatchRecord
from batchgate.core.states import (
    ACTIVE_STATUSES,
    BATCH_TRANSITIONS,
    REQUEST_TRANSITIONS,
    RESULT_STATES,
    TERMINAL_STATUSES,
    BatchStatus,
    JobKind,
    RequestState,
    batch_sources,
    job_kind,
    request_sources,
    settle_sources,
)

B, R = BatchStatus, RequestState


def test_the_batch_lifecycle() -> None:
    edges = {(a.value, b.value) for a, targets in BATCH_TRANSITIONS.items() for b in targets}
    assert edges == {
        ("validating", "in_progress"),
        ("in_progress", "finalizing"),
        ("finalizing", "completed"),
        ("validating", "failed"),
        ("in_progress", "expired"),
        ("validating", "cancelling"),
        ("in_progress", "cancelling"),
        ("cancelling", "cancelled"),
    }
    assert {B.COMPLETED, B.FAILED, B.EXPIRED, B.CANCELLED} == TERMINAL_STATUSES
    assert {B.VALIDATING, B.IN_PROGRESS, B.FINALIZING, B.CANCELLING} == ACTIVE_STATUSES
    assert batch_sources(B.CANCELLING) == {B.VALIDATING, B.IN_PROGRESS}
    assert batch_sources(B.VALIDATING) == frozenset(), "nothing goes back to validating"


def test_the_request_row_lifecycle() -> None:
    assert REQUEST_TRANSITIONS[R.QUEUED] == {R.RUNNING, R.CANCELLED, R.EXPIRED}
    assert REQUEST_TRANSITIONS[R.RUNNING] == {R.QUEUED, R.SUCCEEDED, R.FAILED, R.CANCELLED, R.EXPIRED}
    assert request_sources(R.SUCCEEDED) == {R.RUNNING}, "only a run produces a result"
    assert {R.SUCCEEDED, R.FAILED, R.CANCELLED, R.EXPIRED} == RESULT_STATES
    assert settle_sources(R.CANCELLED, include_running=False) == {R.QUEUED}
    assert settle_sources(R.EXPIRED, include_running=True) == {R.QUEUED, R.RUNNING}
    for state in (R.SUCCEEDED, R.FAILED, R.RUNNING, R.QUEUED):
        with pytest.raises(ValueError):
            settle_sources(state, include_running=True)


def _batch(status: BatchStatus, expires_at: int = 100, upstream: str | None = None) -> BatchRecord:
    return BatchRecord("b", "p", "/v1/chat/completions", "f", "24h", status, 0, expires_at, upstream=upstream)


@pytest.mark.parametrize(
    ("batch", "kind"),
    [
        (_batch(B.VALIDATING), JobKind.VALIDATE),
        (_batch(B.FINALIZING), JobKind.FINALIZE),
        (_batch(B.CANCELLING), JobKind.CANCEL),
        (_batch(B.IN_PROGRESS), None),
        (_batch(B.IN_PROGRESS, expires_at=50), JobKind.EXPIRE),
        (_batch(B.IN_PROGRESS, upstream="up"), JobKind.NATIVE),
        (_batch(B.IN_PROGRESS, expires_at=50, upstream="up"), JobKind.EXPIRE),
        *((_batch(status), None) for status in TERMINAL_STATUSES),
    ],
)
def test_the_job_each_batch_needs(batch: BatchRecord, kind: JobKind | None) -> None:
    assert job_kind(batch, now=50) == kind
