"""File retention on the fakes, with the fake clock: expires_after on uploads and
output_expires_after on batches (bounds and the field named), default retention per
purpose, and the sweeper run by the worker, which never deletes a file a batch that has
not ended still reads, and whose deleting a finished batch's input leaves its output."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import chat_line, jsonl, parse_jsonl

from batchgate.app import Services, build_services, build_worker
from batchgate.core.errors import InvalidRequestError, NotFoundError
from batchgate.core.models import BatchRecord, FileRecord
from batchgate.core.retention import MAX_SECONDS, MIN_SECONDS, Sweeper, expiry_seconds, form_expiry
from batchgate.core.worker import Worker
from batchgate.protocol import openai as wire
from batchgate.settings import Settings
from batchgate.testing import FakeClock, InMemoryStore, MemoryBlobStore, ScriptedBackend

HOUR, DAY = 3600, 86_400


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("1h", "expires_after"),
        ({"anchor": "last_active_at", "seconds": HOUR}, "expires_after.anchor"),
        ({"anchor": "created_at"}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": MIN_SECONDS - 1}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": MAX_SECONDS + 1}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 7200.0}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": True}, "expires_after.seconds"),
    ],
)
def test_expires_after_out_of_bounds_names_the_field(value: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        expiry_seconds(value, "expires_after")
    assert refused.value.param == param and refused.value.status == 400


def test_expires_after_in_bounds_and_from_form_fields() -> None:
    assert expiry_seconds(None, "expires_after") is None
    assert expiry_seconds({"anchor": "created_at", "seconds": MIN_SECONDS}, "x") == HOUR
    assert expiry_seconds({"anchor": "created_at", "seconds": MAX_SECONDS}, "x") == 30 * DAY
    assert form_expiry({"purpose": "batch"}) is None
    assert form_expiry({"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"}) == 7200
    with pytest.raises(InvalidRequestError) as refused:
        form_expiry({"expires_after[seconds]": "7200"})
    assert refused.value.param == "expires_after.anchor"
    # the batch body's output_expires_after is checked by the wire model, with OpenAI's bounds
    for seconds, ok in [(HOUR, True), (HOUR - 1, False), (30 * DAY + 1, False)]:
        body = {
            "input_file_id": "f",
            "endpoint": "/v1/responses",
            "output_expires_after": {"anchor": "created_at", "seconds": seconds},
        }
        try:
            wire.BatchCreate.model_validate(body)
        except ValueError:
            assert not ok
        else:
            assert ok


class Harness:
    def __init__(self, tmp_path: Path, **settings: Any):
        self.clock = FakeClock()
        config = Settings(home=tmp_path, backend="scripted", insecure_no_auth=True, settle_grace=0.3, **settings)
        self.services: Services = build_services(config, InMemoryStore(), MemoryBlobStore(), clock=self.clock)
        self.project = self.services.keys.default_project().id
        self.worker: Worker = build_worker(self.services, ScriptedBackend())
        self.worker.config.poll_interval = self.worker.config.flush_interval = 0.01
        self.worker.config.sweep_interval = 1e12  # the tests sweep when they choose (but the last)

    def upload(self, rows: list[dict], expires_after: int | None = None, purpose: str = "batch") -> FileRecord:
        with self.services.files.upload(self.project) as upload:
            upload.write(jsonl(rows))
            return upload.commit(purpose, "input.jsonl", expires_after)

    def exists(self, file_id: str) -> bool:
        return self.services.store.get_file(file_id, self.project) is not None

    def has_bytes(self, file_id: str) -> bool:
        try:
            self.services.blobs.open(file_id).close()
        except NotFoundError:
            return False
        return True

    def drive(self, until: Callable[[], bool], timeout: float = 15.0) -> None:
        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(stop))
            deadline = time.monotonic() + timeout
            try:
                while not until():
                    assert time.monotonic() < deadline, "timed out"
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
            finally:
                stop.set()
                await task

        asyncio.run(main())

    def sweep(self) -> int:
        """One sweep, as the worker runs it (its store calls need the worker running)."""

        async def main() -> int:
            stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(stop))
            await asyncio.sleep(0)
            try:
                return await self.worker.sweep_expired_files()
            finally:
                stop.set()
                await task

        return asyncio.run(main())

    def batch(self, batch_id: str) -> BatchRecord:
        return self.services.batches.get(self.project, batch_id)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.services.close()


def test_an_upload_expires_after_its_seconds_and_is_swept_with_its_bytes(harness: Harness) -> None:
    kept = harness.upload([chat_line("a")])
    short = harness.upload([chat_line("a")], expires_after=HOUR)
    assert kept.expires_at is None and short.expires_at == short.created_at + HOUR
    assert harness.sweep() == 0, "nothing is due yet"
    harness.clock.advance(HOUR + 1 + (time.time() - short.created_at))
    assert harness.sweep() == 1
    assert not harness.exists(short.id) and not harness.has_bytes(short.id)
    assert harness.exists(kept.id) and harness.has_bytes(kept.id)


def test_a_running_batchs_input_is_kept_until_the_batch_ends(harness: Harness) -> None:
    file = harness.upload([chat_line(f"r{i}", mock={"sleep": 0.02}) for i in range(20)], expires_after=HOUR)
    batch = harness.services.batches.create(harness.project, file.id, "/v1/chat/completions", "24h")
    harness.clock.advance(2 * HOUR)  # expired before the batch even starts
    assert harness.sweep() == 0 and harness.exists(file.id), "validating: the batch reads it"
    harness.drive(lambda: harness.batch(batch.id).status == "completed")
    assert harness.sweep() == 1 and not harness.exists(file.id)
    done = harness.batch(batch.id)
    assert done.output_file_id is not None
    with harness.services.blobs.open(done.output_file_id) as out:
        assert len(parse_jsonl(out.read())) == 20, "the output outlives its deleted input"


def test_result_files_expire_after_output_expires_after(harness: Harness) -> None:
    file = harness.upload([chat_line("ok"), chat_line("bad", mock={"status": 400})])
    batch = harness.services.batches.create(
        harness.project, file.id, "/v1/chat/completions", "24h", output_expires_after=2 * HOUR
    )
    assert batch.output_expires_after == 2 * HOUR
    harness.drive(lambda: harness.batch(batch.id).status == "completed")
    done = harness.batch(batch.id)
    assert done.output_file_id is not None and done.error_file_id is not None
    for file_id in (done.output_file_id, done.error_file_id):
        record = harness.services.files.get(harness.project, file_id)
        assert record.expires_at == record.created_at + 2 * HOUR
    harness.clock.advance(3 * HOUR + (time.time() - batch.created_at))
    assert harness.sweep() == 2
    assert not harness.exists(done.output_file_id) and not harness.has_bytes(done.error_file_id)
    assert harness.exists(file.id), "the input had no expiry"


def test_default_retention_per_purpose(tmp_path: Path) -> None:
    h = Harness(tmp_path, retention_batch=DAY, retention_batch_output=2 * DAY)
    try:
        upload = h.upload([chat_line("a")])
        assert upload.expires_at == upload.created_at + DAY
        explicit = h.upload([chat_line("a")], expires_after=HOUR)
        assert explicit.expires_at == explicit.created_at + HOUR, "the upload's own expiry wins"
        batch = h.services.batches.create(h.project, upload.id, "/v1/chat/completions", "24h")
        assert batch.output_expires_after == 2 * DAY
        mine = h.services.batches.create(h.project, upload.id, "/v1/chat/completions", "24h", output_expires_after=HOUR)
        assert mine.output_expires_after == HOUR
    finally:
        h.services.close()


def test_a_sweep_deletes_in_chunks_until_nothing_is_due(harness: Harness) -> None:
    files = [harness.upload([chat_line("a")], expires_after=HOUR) for _ in range(7)]
    harness.worker.sweeper = Sweeper(harness.services.store, harness.services.blobs, harness.clock, chunk=3)
    harness.clock.advance(2 * HOUR + (time.time() - files[0].created_at))
    assert harness.sweep() == 7 and not any(harness.exists(f.id) for f in files)


def test_the_worker_sweeps_on_its_interval(harness: Harness) -> None:
    file = harness.upload([chat_line("a")], expires_after=HOUR)
    harness.clock.advance(2 * HOUR + (time.time() - file.created_at))
    harness.worker.config.sweep_interval = 60
    harness.drive(lambda: not harness.exists(file.id))  # the first turn of the loop sweeps
    assert not harness.has_bytes(file.id)
