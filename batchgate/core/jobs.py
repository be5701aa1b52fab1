"""Batch-level jobs a worker claims: validate the input, settle a cancel or an expiry,
and finalize (write the result files and end the batch).

Each job is idempotent, so a worker that dies mid-job leaves nothing another worker
cannot redo from the store. They block (file I/O, many rows) and run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from batchgate.core.ids import now
from batchgate.core.models import BatchJob, BatchRecord, BatchStatus, RequestState
from batchgate.core.output import write_result_files
from batchgate.core.ports import BlobStore, Store
from batchgate.core.validation import ValidationLimits, validate_input

log = logging.getLogger("batchgate.jobs")

# How a worker runs a job: returns a time to look at the batch again, or None when done.
JobExecutor = Callable[[BatchJob], Awaitable[int | None]]


@dataclass(slots=True)
class JobConfig:
    limits: ValidationLimits
    # how long a cancel or expiry waits for in-flight rows of other workers before
    # settling them as cancelled/expired (this worker abandons its own at once)
    settle_grace: float = 5.0


class JobRunner:
    def __init__(self, store: Store, blobs: BlobStore, config: JobConfig):
        self.store = store
        self.blobs = blobs
        self.config = config

    def run(self, job: BatchJob) -> int | None:
        """Run one job; returns a time to look at the batch again, or None when done."""
        batch = job.batch
        if job.kind == "validate":
            self.validate(batch)
            return None
        if job.kind == "finalize":
            self.finalize(batch, BatchStatus.COMPLETED)
            return None
        if job.kind == "cancel":
            return self.settle(batch, BatchStatus.CANCELLED, batch.cancelling_at or now())
        return self.settle(batch, BatchStatus.EXPIRED, batch.expires_at)

    def validate(self, batch: BatchRecord) -> None:
        self.store.clear_requests(batch.id)  # a previous attempt may have died half-way
        with self.blobs.open(batch.input_file_id) as stream:
            result = validate_input(
                stream,
                batch.endpoint,
                self.config.limits,
                lambda lines: self.store.add_lines(batch.id, lines),
            )
        if result.errors:
            self.store.clear_requests(batch.id)
            self.store.fail_batch(batch.id, result.errors, now())
            log.info("batch %s failed validation with %d error(s)", batch.id, len(result.errors))
        elif self.store.start_batch(batch.id, result.total, now()):
            log.info("batch %s validated: %d request lines, in_progress", batch.id, result.total)

    def settle(self, batch: BatchRecord, final: BatchStatus, since: int) -> int | None:
        state = RequestState.CANCELLED if final == BatchStatus.CANCELLED else RequestState.EXPIRED
        code = "batch_cancelled" if final == BatchStatus.CANCELLED else "batch_expired"
        message = (
            "The batch was cancelled before this request ran."
            if final == BatchStatus.CANCELLED
            else "The batch's completion window ended before this request ran."
        )
        self.store.settle_unfinished(batch.id, state, code, message, include_running=False)
        if self.store.count_running(batch.id):
            if now() < since + self.config.settle_grace:
                return now() + 1
            self.store.settle_unfinished(batch.id, state, code, message, include_running=True)
        self.finalize(batch, final)
        return None

    def finalize(self, batch: BatchRecord, final: BatchStatus) -> None:
        files = write_result_files(self.store, self.blobs, batch)
        self.store.finish_batch(
            batch.id,
            final,
            files.files,
            files.output_file_id,
            files.error_file_id,
            files.completed,
            files.failed,
            now(),
        )
        log.info(
            "batch %s %s: %d completed, %d failed",
            batch.id,
            final.value,
            files.completed,
            files.failed,
        )


def in_thread(runner: JobRunner) -> JobExecutor:
    """Run jobs in a thread of the worker's process (the default; fakes need it)."""

    async def run(job: BatchJob) -> int | None:
        return await asyncio.to_thread(runner.run, job)

    return run
