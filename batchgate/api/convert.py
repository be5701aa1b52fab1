"""Domain records to wire models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

from batchgate.core.budgets import BUDGET_PAUSED_STATUSES, PAUSED_REASON
from batchgate.core.models import BatchRecord, FileRecord
from batchgate.core.ports import Page
from batchgate.core.scheduling import batch_at_risk
from batchgate.protocol import openai as wire


def file_object(f: FileRecord) -> wire.FileObject:
    return wire.FileObject(
        id=f.id,
        bytes=f.bytes,
        created_at=f.created_at,
        expires_at=f.expires_at,
        filename=f.filename,
        purpose=cast(wire.FilePurpose, f.purpose),
    )


def batch_object(b: BatchRecord, now: int | None = None) -> wire.Batch:
    """The wire batch; `now` (default: the wall clock) decides `at_risk`."""
    errors = (
        wire.BatchErrors(
            data=[wire.BatchErrorData(code=e.code, message=e.message, line=e.line, param=e.param) for e in b.errors]
        )
        if b.errors
        else None
    )
    return wire.Batch(
        id=b.id,
        endpoint=cast(wire.BatchEndpoint, b.endpoint),
        errors=errors,
        input_file_id=b.input_file_id,
        completion_window=b.completion_window,
        status=b.status.value,
        output_file_id=b.output_file_id,
        error_file_id=b.error_file_id,
        created_at=b.created_at,
        in_progress_at=b.in_progress_at,
        expires_at=b.expires_at,
        finalizing_at=b.finalizing_at,
        completed_at=b.completed_at,
        failed_at=b.failed_at,
        expired_at=b.expired_at,
        cancelling_at=b.cancelling_at,
        cancelled_at=b.cancelled_at,
        request_counts=wire.RequestCounts(total=b.total, completed=b.completed, failed=b.failed),
        usage=wire.BatchUsage(
            input_tokens=b.input_tokens,
            output_tokens=b.output_tokens,
            total_tokens=b.input_tokens + b.output_tokens,
            cost=round(b.cost, 8),
        ),
        metadata=b.metadata,
        at_risk=batch_at_risk(b, int(time.time()) if now is None else now),
        paused_at=b.paused_at if b.paused else None,
        paused_reason=PAUSED_REASON if b.budget_paused_at is not None and b.status in BUDGET_PAUSED_STATUSES else None,
    )


def file_list(page: Page[FileRecord]) -> wire.FileList:
    data = [file_object(f) for f in page.data]
    first_id, last_id = _ends(data)
    return wire.FileList(data=data, first_id=first_id, last_id=last_id, has_more=page.has_more)


def batch_list(page: Page[BatchRecord]) -> wire.BatchList:
    data = [batch_object(b) for b in page.data]
    first_id, last_id = _ends(data)
    return wire.BatchList(data=data, first_id=first_id, last_id=last_id, has_more=page.has_more)


def _ends(data: Sequence[wire.FileObject | wire.Batch]) -> tuple[str | None, str | None]:
    """first_id and last_id of a list page: the cursors for `after`."""
    return (data[0].id, data[-1].id) if data else (None, None)
