"""A validation job ends, whatever the input (issue 11, defect 3): a prompt line with a
version past 2^63 fails its batch with a line error, and a validation that keeps failing
the same way fails its batch instead of being retried every few seconds forever.

Real SQLite (the overflow came from it), a fake clock for the retry waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import chat_line, jsonl

from batchgate.app import Services, build_services, build_worker
from batchgate.core.errors import InsufficientStorageError
from batchgate.core.jobs import MAX_VALIDATION_FAILURES
from batchgate.core.models import BatchJob, BatchRecord, BatchStatus
from batchgate.core.states import JobKind
from batchgate.core.worker import Worker
from batchgate.settings import Settings
from batchgate.testing import FakeClock, ScriptedBackend

CHAT = "/v1/chat/completions"


class Harness:
    def __init__(self, services: Services, clock: FakeClock):
        self.services = services
        self.clock = clock
        self.project = services.keys.default_project().id
        self.worker: Worker = build_worker(services, ScriptedBackend())
        self.worker.config.poll_interval = 0.01
        self.worker.config.flush_interval = 0.01

    def submit(self, rows: list) -> str:
        with self.services.files.upload(self.project) as upload:
            upload.write(jsonl(rows))
            file = upload.commit("batch", "input.jsonl")
        return self.services.batches.create(self.project, file.id, CHAT, "24h").id

    def batch(self, batch_id: str) -> BatchRecord:
        return self.services.batches.get(self.project, batch_id)

    def run_to_end(self, batch_id: str, timeout: float = 20.0) -> BatchRecord:
        """Run the worker until the batch ends, the clock moving a second every 10 ms
        (failed jobs are looked at again 5 s later)."""

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(stop))
            deadline = time.monotonic() + timeout
            try:
                while self.batch(batch_id).status not in ("completed", "failed", "expired", "cancelled"):
                    assert time.monotonic() < deadline, "timed out"
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
                    self.clock.advance(1)
            finally:
                stop.set()
                await task

        asyncio.run(main())
        return self.batch(batch_id)

    def fail_validation(self, failures: Callable[[int], BaseException | None]) -> list[int]:
        """Make the worker's validation jobs raise `failures(attempt)` (None: run for real);
        returns the list of attempts made."""
        real = self.worker.jobs
        attempts: list[int] = []

        async def flaky(job: BatchJob) -> int | None:
            if job.kind == JobKind.VALIDATE:
                attempts.append(len(attempts) + 1)
                exc = failures(len(attempts))
                if exc is not None:
                    raise exc
            return await real(job)

        self.worker.jobs = flaky
        return attempts


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    settings = Settings(home=tmp_path, backend="scripted", insecure_no_auth=True)
    clock = FakeClock()
    services = build_services(settings, clock=clock)  # SQLite and files on disk
    yield Harness(services, clock)
    services.close()


def prompt_line(custom_id: str, version: object) -> dict:
    body = {"prompt_slug": "triage", "prompt_version": version, "variables": {"ticket": "t"}}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


@pytest.mark.parametrize("version", [2**63, 2**64 - 1, 2**64, 10**30, -(2**63) - 1, 0])
def test_a_prompt_version_out_of_range_fails_its_line(harness: Harness, version: int) -> None:
    messages = [{"role": "user", "content": "Ticket: {{ticket}}"}]
    harness.services.prompts.create(harness.project, "triage", messages=messages, model_config={"model": "m"})
    batch = harness.run_to_end(harness.submit([prompt_line("ok", 1), prompt_line("huge", version)]))
    assert batch.status == BatchStatus.FAILED
    assert [(e.code, e.line, e.param) for e in batch.errors or []] == [("invalid_type", 2, "body.prompt_version")]


def test_a_validation_that_keeps_failing_the_same_way_fails_its_batch(harness: Harness) -> None:
    attempts = harness.fail_validation(lambda attempt: OverflowError("Python int too large to convert"))
    batch = harness.run_to_end(harness.submit([chat_line("a"), chat_line("b")]))
    assert batch.status == BatchStatus.FAILED
    assert len(attempts) == MAX_VALIDATION_FAILURES
    [error] = batch.errors or []
    assert error.code == "validation_failed"
    assert "OverflowError: Python int too large to convert" in error.message
    assert f"{MAX_VALIDATION_FAILURES} attempts" in error.message


def test_different_failures_and_a_full_disk_are_retried_until_validation_succeeds(harness: Harness) -> None:
    def failures(attempt: int) -> BaseException | None:
        if attempt <= 4:
            return RuntimeError(f"database is locked ({attempt})")  # a new failure each time
        if attempt <= 9:
            return InsufficientStorageError("The disk is full.")  # never counts
        return None

    attempts = harness.fail_validation(failures)
    batch = harness.run_to_end(harness.submit([chat_line("a"), chat_line("b")]))
    assert batch.status == BatchStatus.COMPLETED, batch.errors
    assert len(attempts) == 10
    assert batch.completed == 2
