"""Batch-level jobs a worker claims: validate the input, settle a cancel or an expiry,
and finalize (write the result files and end the batch).

Each job is idempotent, so a worker that dies mid-job leaves nothing another worker
cannot redo from the store, and every write checks that the job is still this worker's.
Jobs block (file I/O, many rows): a `JobExecutor` runs them off the worker's loop, in a
thread (`in_thread`) or in a child process (`jobs_process.SubprocessJobs`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from batchgate.core.clock import Clock, SystemClock
from batchgate.core.errors import InsufficientStorageError, JobLostError, NotFoundError
from batchgate.core.models import BatchError, BatchJob, BatchStatus, RequestState
from batchgate.core.output import write_result_files
from batchgate.core.passthrough import Passthrough
from batchgate.core.ports import BlobStore, Store
from batchgate.core.prompts import PromptLines
from batchgate.core.states import JobKind
from batchgate.core.validation import ValidationLimits, ValidationResult, validate_input

log = logging.getLogger("batchgate.jobs")

# How a worker runs a job: returns a time to look at the batch again, or None when done.
JobExecutor = Callable[[BatchJob], Awaitable[int | None]]

# A validation that fails this many times in a row with the same error (a bug, an input
# that crashes the job's process) fails its batch instead of being retried forever.
MAX_VALIDATION_FAILURES = 3


class ValidationFailures:
    """Counts the consecutive, identical failures of each batch's validation job."""

    def __init__(self, limit: int = MAX_VALIDATION_FAILURES):
        self.limit = limit
        self._seen: dict[str, tuple[str, int]] = {}

    def give_up(self, job: BatchJob, exc: BaseException) -> bool:
        """Record a failed job; True when it is a validation that has now failed `limit`
        times the same way. A full disk never counts: space comes back, and the batch
        then validates."""
        if job.kind != JobKind.VALIDATE or isinstance(exc, InsufficientStorageError):
            return False
        same = describe(exc)
        previous, count = self._seen.get(job.batch.id, ("", 0))
        count = count + 1 if previous == same else 1
        if count < self.limit:
            self._seen[job.batch.id] = (same, count)
            return False
        del self._seen[job.batch.id]
        return True

    def succeeded(self, job: BatchJob) -> None:
        self._seen.pop(job.batch.id, None)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def fail_unvalidatable(store: Store, job: BatchJob, exc: BaseException, now: int, attempts: int) -> None:
    """End a batch whose validation keeps failing: failed, with the error it fails with."""
    message = f"Validation could not complete ({attempts} attempts failed the same way: {describe(exc)})."
    store.clear_requests(job.batch.id, job.owner)
    store.fail_batch(job.batch.id, [BatchError("validation_failed", message, None, None)], now, job.owner)


@dataclass(slots=True)
class JobConfig:
    limits: ValidationLimits
    # how long a cancel or expiry waits for in-flight rows of other workers before
    # settling them as cancelled/expired (this worker abandons its own at once)
    settle_grace: float = 5.0
    # native batch passthrough (None: no route asks for it); `native_upstream` picks
    # the upstream for a batch of these models, if it is to be passed through
    passthrough: Passthrough | None = None
    native_upstream: Callable[[set[str]], str | None] = lambda models: None
    # the problem with a model for a key with this routing profile: (profile, model) ->
    # problem or None (None: profiles are not checked)
    profile_model_problem: Callable[[str, str], str | None] | None = None


class JobRunner:
    def __init__(self, store: Store, blobs: BlobStore, config: JobConfig, clock: Clock | None = None):
        self.store = store
        self.blobs = blobs
        self.config = config
        self.clock = clock or SystemClock()

    def _now(self) -> int:
        return int(self.clock.time())

    def run(self, job: BatchJob) -> int | None:
        """Run one job; returns a time to look at the batch again, or None when done."""
        try:
            match job.kind:
                case JobKind.VALIDATE:
                    self.validate(job)
                    return None
                case JobKind.FINALIZE:
                    self.finalize(job, BatchStatus.COMPLETED)
                    return None
                case JobKind.NATIVE:
                    assert self.config.passthrough is not None, "a passed-through batch needs its routing config"
                    return self.config.passthrough.advance(job)
                case JobKind.CANCEL:
                    return self.settle(job, BatchStatus.CANCELLED, job.batch.cancelling_at or self._now())
                case JobKind.EXPIRE:
                    return self.settle(job, BatchStatus.EXPIRED, job.batch.expires_at)
        except JobLostError as exc:
            log.warning("batch %s: %s job handed to another worker, stopping (%s)", job.batch.id, job.kind, exc)
            return None

    def validate(self, job: BatchJob) -> None:
        batch = job.batch
        self.store.clear_requests(batch.id, job.owner)  # a previous attempt may have died half-way
        try:
            stream = self.blobs.open(batch.input_file_id)
        except NotFoundError:
            missing = BatchError("input_file_missing", "The input file was deleted.", None, "input_file_id")
            self.store.fail_batch(batch.id, [missing], self._now(), job.owner)
            return
        with stream:
            # lines that name a prompt template are checked as rendered, in the batch's project
            key = self.store.get_api_key(batch.key_id) if batch.key_id else None
            profile = key.routing_profile if key is not None else None
            limits = replace(
                self.config.limits,
                render_prompt=PromptLines(self.store).checker(batch.project_id),
                allowed_models=frozenset(key.allowed_models) if key and key.allowed_models is not None else None,
            )
            if profile is not None and (check := self.config.profile_model_problem) is not None:
                # the key's lines resolve their model through its routing profile
                limits.check_model = functools.partial(check, profile)
            result = validate_input(
                stream,
                batch.endpoint,
                limits,
                lambda lines: self.store.add_lines(batch.id, lines, job.owner),
            )
        if result.errors:
            self.store.clear_requests(batch.id, job.owner)
            self.store.fail_batch(batch.id, result.errors, self._now(), job.owner)
            log.info("batch %s failed validation with %d error(s)", batch.id, len(result.errors))
        elif self.store.start_batch(
            batch.id, result.total, self._now(), job.owner, upstream=None if profile else self._native_upstream(result)
        ):
            log.info("batch %s validated: %d request lines", batch.id, result.total)

    def _native_upstream(self, result: ValidationResult) -> str | None:
        """Where a batch is passed through whole; never one with prompt lines (they are
        rendered as they run, which an upstream's Batch API cannot do)."""
        return None if result.uses_prompts else self.config.native_upstream(result.models)

    def settle(self, job: BatchJob, final: BatchStatus, since: int) -> int | None:
        batch = job.batch
        state = RequestState.CANCELLED if final == BatchStatus.CANCELLED else RequestState.EXPIRED
        code = "batch_cancelled" if final == BatchStatus.CANCELLED else "batch_expired"
        message = (
            "The batch was cancelled before this request ran."
            if final == BatchStatus.CANCELLED
            else "The batch's completion window ended before this request ran."
        )
        passthrough = self.config.passthrough
        if batch.upstream is not None and passthrough is not None and not passthrough.stop(job, since):
            return self._now() + passthrough.poll_interval  # the upstream is still winding down
        self.store.settle_unfinished(batch.id, state, code, message, include_running=False)
        if self.store.count_running(batch.id) and self._now() < since + self.config.settle_grace:
            return self._now() + 1  # give other workers' in-flight lines a moment to finish
        # settle again, running rows included: this also catches rows a reaper requeued
        # after the first pass, so none is left unsettled when the files are written
        self.store.settle_unfinished(batch.id, state, code, message, include_running=True)
        self.finalize(job, final)
        return None

    def finalize(self, job: BatchJob, final: BatchStatus) -> None:
        batch = job.batch
        files = write_result_files(self.store, self.blobs, batch)
        ended = self.store.finish_batch(
            batch.id, job.owner, final, files.files, files.output_file_id, files.error_file_id,
            files.completed, files.failed, self._now(),
        )  # fmt: skip
        if ended:
            log.info("batch %s %s: %d completed, %d failed", batch.id, final.value, files.completed, files.failed)
        else:
            # e.g. an expiry raced with the last result moving the batch to finalizing:
            # the job that now applies runs next and rewrites the same files
            log.info("batch %s is no longer ready to end as %s; leaving it to the next job", batch.id, final.value)


def in_thread(runner: JobRunner) -> JobExecutor:
    """Run jobs in a thread of the worker's process (the default; fakes need it)."""

    async def run(job: BatchJob) -> int | None:
        return await asyncio.to_thread(runner.run, job)

    return run
