"""The batch lifecycle end to end on the worker, without HTTP, on the fakes.

The in-memory store behaves as the SQLite store does (both pass the store contract,
tests/contract), and time is a FakeClock: expiry, heartbeats, reaping and retry
backoff happen when a test moves the clock, not after real seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgdb import new_database
from support import chat_line, jsonl, parse_jsonl

from batchgate.app import Services, build_services, build_worker, job_runner
from batchgate.core.errors import BackendError
from batchgate.core.models import BatchRecord, BatchStatus, RequestResult, RequestState
from batchgate.core.ports import BackendRequest, BackendResponse, Store, WorkerInfo
from batchgate.settings import Settings
from batchgate.store.postgres import PostgresStore
from batchgate.testing import FakeClock, InMemoryStore, MemoryBlobStore, ScriptedBackend


class Harness:
    def __init__(self, services: Services, clock: FakeClock, **worker_overrides: float):
        self.services = services
        self.clock = clock
        self.project = services.keys.default_project().id
        self.backend = ScriptedBackend(count_calls=True)
        self.worker_overrides = worker_overrides
        self.worker = self.new_worker()

    def new_worker(self):  # type: ignore[no-untyped-def]
        worker = build_worker(self.services, self.backend)
        worker.config.poll_interval = 0.01
        worker.config.flush_interval = 0.01
        worker.config.status_check_interval = 0.05
        for name, value in self.worker_overrides.items():
            setattr(worker.config, name, value)
        return worker

    def submit(self, rows: list, window: str = "24h", endpoint: str = "/v1/chat/completions") -> str:
        with self.services.files.upload(self.project) as upload:
            upload.write(jsonl(rows))
            file = upload.commit("batch", "input.jsonl")
        return self.services.batches.create(self.project, file.id, endpoint, window).id

    def batch(self, batch_id: str) -> BatchRecord:
        return self.services.batches.get(self.project, batch_id)

    def drive(self, until: Callable[[], bool], timeout: float = 15.0, tick: float = 0.0) -> None:
        """Run the worker until `until()`; the fake clock stands still, or with `tick`
        moves that many seconds every 10 ms (for jobs that look again a second later)."""

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(stop))
            deadline = time.monotonic() + timeout
            try:
                while not until():
                    assert time.monotonic() < deadline, "timed out"
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
                    self.clock.advance(tick)
            finally:
                stop.set()
                await task

        asyncio.run(main())

    def validate(self, batch_id: str) -> None:
        """Run the batch's validation but claim none of its lines, which the test then
        claims itself (a worker that claimed them first would race it)."""
        concurrency, self.worker.config.concurrency = self.worker.config.concurrency, 0
        try:
            self.drive(lambda: self.batch(batch_id).status == BatchStatus.IN_PROGRESS)
        finally:
            self.worker.config.concurrency = concurrency

    def run_to_end(self, batch_id: str, timeout: float = 15.0, tick: float = 0.0) -> BatchRecord:
        self.drive(
            lambda: self.batch(batch_id).status in {"completed", "failed", "expired", "cancelled"}, timeout, tick
        )
        return self.batch(batch_id)

    def lines(self, file_id: str | None) -> list[dict]:
        if file_id is None:
            return []
        with self.services.blobs.open(file_id) as f:
            return parse_jsonl(f.read())

    def assert_exactly_once(self, batch: BatchRecord, custom_ids: list[str]) -> tuple[list[dict], list[dict]]:
        out, err = self.lines(batch.output_file_id), self.lines(batch.error_file_id)
        seen = [r["custom_id"] for r in out + err]
        assert sorted(seen) == sorted(custom_ids), "every input line in exactly one result line"
        assert batch.total == len(custom_ids)
        assert batch.completed == len(out) and batch.failed == len(err)
        return out, err


# the in-memory fake, and PostgreSQL (a database of its own per test; see tests/pgdb.py)
STORES: dict[str, Callable[[], Store]] = {
    "memory": InMemoryStore,
    "postgres": lambda: PostgresStore(new_database(), pool_size=4, migrate=False),
}


@pytest.fixture(params=sorted(STORES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    # a backoff of a minute: with the fake clock a retry costs no real time
    settings = Settings(
        home=tmp_path, backend="scripted", insecure_no_auth=True, settle_grace=0.3, max_attempts=3, retry_backoff=60
    )
    clock = FakeClock()
    services = build_services(settings, STORES[request.param](), MemoryBlobStore(), clock=clock)
    yield Harness(services, clock)
    services.close()


def ids(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_happy_path_outputs_every_line_in_order(harness: Harness) -> None:
    batch_id = harness.submit([chat_line(c, f"say {c}") for c in ids(30)])
    batch = harness.run_to_end(batch_id)
    assert batch.status == BatchStatus.COMPLETED
    assert batch.error_file_id is None
    out, _ = harness.assert_exactly_once(batch, ids(30))
    assert [r["custom_id"] for r in out] == ids(30)
    first = out[0]
    assert first["error"] is None and first["id"].startswith("batch_req_")
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "echo: say r0"
    assert batch.input_tokens == 30 * 2 and batch.output_tokens == 30 * 3
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert getattr(batch, stamp) is not None


def test_failures_retries_and_error_file(harness: Harness) -> None:
    rows = [
        chat_line("ok"),
        chat_line("http400", mock={"status": 400}),
        chat_line("broken", mock={"fail": "boom"}),
        chat_line("flaky", mock={"transient_failures": 2}),
        chat_line("dead", mock={"transient_failures": 10}),
    ]
    batch = harness.run_to_end(harness.submit(rows))
    assert batch.status == BatchStatus.COMPLETED
    out, err = harness.assert_exactly_once(batch, ["ok", "http400", "broken", "flaky", "dead"])
    assert {r["custom_id"] for r in out} == {"ok", "flaky"}
    errors = {r["custom_id"]: r for r in err}
    assert errors["http400"]["response"]["status_code"] == 400
    assert errors["http400"]["response"]["body"]["error"]["message"] == "scripted error 400"
    assert errors["broken"]["response"] is None
    assert errors["broken"]["error"] == {"code": "backend_error", "message": "boom"}
    assert errors["dead"]["error"]["code"] == "server_error"
    assert harness.backend.calls["flaky"] == 3  # two transient failures, then success
    assert harness.backend.calls["dead"] == 3  # bounded by max_attempts


def test_all_lines_failed_still_completes_with_only_an_error_file(harness: Harness) -> None:
    batch = harness.run_to_end(harness.submit([chat_line(c, mock={"status": 422}) for c in ids(5)]))
    assert batch.status == BatchStatus.COMPLETED
    assert batch.output_file_id is None and batch.error_file_id is not None
    harness.assert_exactly_once(batch, ids(5))
    assert harness.services.store.get_file(batch.error_file_id, harness.project) is not None


def test_validation_failure_fails_the_batch_without_running_anything(harness: Harness) -> None:
    rows = [chat_line("a"), {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions"}, chat_line("a")]
    batch = harness.run_to_end(harness.submit(rows))
    assert batch.status == BatchStatus.FAILED and batch.failed_at is not None
    assert [(e.line, e.param, e.code) for e in batch.errors or []] == [
        (2, "body", "missing_required_parameter"),
        (3, "custom_id", "duplicate_custom_id"),
    ]
    assert batch.output_file_id is None and batch.error_file_id is None
    assert sum(harness.backend.calls.values()) == 0


def test_cancel_keeps_finished_results_and_settles_the_rest(harness: Harness) -> None:
    harness.worker.config.concurrency = 4
    batch_id = harness.submit([chat_line(c, mock={"sleep": 0.05}) for c in ids(60)])
    harness.drive(lambda: harness.batch(batch_id).completed >= 8)
    cancelled = harness.services.batches.cancel(harness.project, batch_id)
    assert cancelled.status == BatchStatus.CANCELLING and cancelled.cancelling_at == int(harness.clock.time())
    started = time.monotonic()
    batch = harness.run_to_end(batch_id, tick=0.1)
    assert time.monotonic() - started < 3, "a cancel finishes promptly"
    assert batch.status == BatchStatus.CANCELLED and batch.cancelled_at is not None
    out, err = harness.assert_exactly_once(batch, ids(60))
    assert len(out) >= 8
    assert {r["error"]["code"] for r in err} == {"batch_cancelled"}
    assert all(r["response"] is None for r in err)


def test_cancel_while_validating(harness: Harness) -> None:
    batch_id = harness.submit([chat_line(c) for c in ids(5)])
    harness.services.batches.cancel(harness.project, batch_id)
    batch = harness.run_to_end(batch_id)
    assert batch.status == BatchStatus.CANCELLED
    assert batch.output_file_id is None and batch.error_file_id is None
    assert sum(harness.backend.calls.values()) == 0


def test_expiry_keeps_partial_output(harness: Harness) -> None:
    harness.worker.config.concurrency = 2
    batch_id = harness.submit([chat_line(c, mock={"sleep": 0.05}) for c in ids(40)], window="1h")
    harness.drive(lambda: harness.batch(batch_id).completed >= 4)
    assert harness.batch(batch_id).status == BatchStatus.IN_PROGRESS
    harness.clock.advance(3600)  # the window ends while lines run
    batch = harness.run_to_end(batch_id, tick=0.1)  # time moves on: the settle may wait for running lines
    assert batch.status == BatchStatus.EXPIRED
    assert batch.expired_at is not None and batch.expires_at <= batch.expired_at < batch.expires_at + 5
    out, err = harness.assert_exactly_once(batch, ids(40))
    assert 4 <= len(out) < 40, "lines finished before the window ended are kept"
    assert err and {r["error"]["code"] for r in err} == {"batch_expired"}


def test_retry_backoff_waits_on_the_clock(harness: Harness) -> None:
    """Retry-After of 20 s, twice: 40 s pass on the clock, none in the test."""
    attempts: list[float] = []

    async def rate_limited(request: BackendRequest) -> BackendResponse:
        attempts.append(harness.clock.time())
        if len(attempts) < 3:
            raise BackendError("slow down", code="rate_limit_exceeded", transient=True, retry_after=20)
        return await ScriptedBackend().execute(request)

    harness.worker.backend.execute = rate_limited  # type: ignore[method-assign]
    started = time.monotonic()
    batch = harness.run_to_end(harness.submit([chat_line("r0")]))
    assert time.monotonic() - started < 5
    assert batch.status == BatchStatus.COMPLETED and batch.completed == 1
    assert [round(t - attempts[0]) for t in attempts] == [0, 20, 40]


def test_dead_worker_rows_are_requeued_and_run_once(harness: Harness) -> None:
    store = harness.services.store
    batch_id = harness.submit([chat_line(c) for c in ids(20)])
    harness.validate(batch_id)
    # a worker on another host claims rows, then stops heartbeating
    store.register_worker(WorkerInfo("ghost", "elsewhere", 1, harness.clock.time()))
    claimed = store.claim_requests("ghost", 7, int(harness.clock.time()))
    assert len(claimed) == 7
    harness.drive(lambda: harness.batch(batch_id).completed == 13)
    assert "ghost" in {w.id for w in store.list_workers()}, "alive until its heartbeat is too old"
    harness.clock.advance(harness.worker.config.dead_after + 1)
    batch = harness.run_to_end(batch_id)
    harness.assert_exactly_once(batch, ids(20))
    assert all(harness.backend.calls[c] == 1 for c in ids(20))
    assert "ghost" not in {w.id for w in store.list_workers()}


def test_results_of_a_reaped_worker_are_not_recorded_twice(harness: Harness) -> None:
    store = harness.services.store
    batch_id = harness.submit([chat_line(c) for c in ids(3)])
    harness.validate(batch_id)
    store.register_worker(WorkerInfo("slow", "elsewhere", 1, harness.clock.time()))
    claim = store.claim_requests("slow", 1, int(harness.clock.time()))[0]
    store.reap_worker("slow")  # presumed dead; its row goes back to the queue
    batch = harness.run_to_end(batch_id)
    late = RequestResult(batch_id, claim.line, RequestState.SUCCEEDED, 1, "late", "r0", status_code=200, body=b"{}")
    store.record_results("slow", [late], int(harness.clock.time()))  # the zombie reports back: ignored
    assert harness.batch(batch_id).completed == batch.completed == 3


def test_poison_line_is_failed_after_max_attempts(harness: Harness) -> None:
    store = harness.services.store
    batch_id = harness.submit([chat_line("poison"), chat_line("fine")])
    harness.validate(batch_id)
    for i in range(3):  # three workers crash while holding the same row
        store.register_worker(WorkerInfo(f"crashy{i}", "elsewhere", 1, harness.clock.time()))
        assert [c.line for c in store.claim_requests(f"crashy{i}", 1, int(harness.clock.time()))] == [1]
        store.reap_worker(f"crashy{i}")
    batch = harness.run_to_end(batch_id)
    _, err = harness.assert_exactly_once(batch, ["poison", "fine"])
    assert [r["error"]["code"] for r in err] == ["max_attempts_exceeded"]
    assert harness.backend.calls["poison"] == 0


def test_graceful_stop_gives_unfinished_rows_back(harness: Harness) -> None:
    harness.worker.config.concurrency = 4
    harness.worker.config.drain_timeout = 0.1
    batch_id = harness.submit([chat_line(c, mock={"sleep": 5}) for c in ids(6)])
    harness.drive(lambda: bool(harness.worker._inflight))
    batch = harness.batch(batch_id)
    assert batch.status == BatchStatus.IN_PROGRESS and batch.completed == 0
    # nothing is lost: another worker picks the rows up from the queue
    claims = harness.services.store.claim_requests("next", 10, int(harness.clock.time()))
    assert sorted(c.line for c in claims) == list(range(1, 7))


def test_embeddings_and_completions_endpoints(harness: Harness) -> None:
    emb = [
        {"custom_id": c, "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": "a b"}}
        for c in ids(3)
    ]
    cmp = [
        {"custom_id": c, "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "x"}}
        for c in ids(3)
    ]
    for rows, endpoint, kind in ((emb, "/v1/embeddings", "list"), (cmp, "/v1/completions", "text_completion")):
        batch = harness.run_to_end(harness.submit(rows, endpoint=endpoint))
        out, _ = harness.assert_exactly_once(batch, ids(3))
        assert {r["response"]["body"]["object"] for r in out} == {kind}


def test_a_small_batch_is_not_stuck_behind_a_large_one(harness: Harness) -> None:
    harness.worker.config.concurrency = 8
    big = harness.submit([chat_line(f"b{i}", mock={"sleep": 0.05}) for i in range(400)])
    harness.drive(lambda: harness.batch(big).completed > 0)
    small = harness.submit([chat_line(f"s{i}", mock={"sleep": 0.05}) for i in range(8)])
    harness.drive(lambda: harness.batch(small).status == BatchStatus.COMPLETED, timeout=10)
    assert harness.batch(big).status == BatchStatus.IN_PROGRESS, "the small batch finished first"


def test_a_worker_reaped_while_alive_rejoins_and_nothing_runs_twice(harness: Harness) -> None:
    harness.worker.config.concurrency = 4
    store = harness.services.store
    batch_id = harness.submit([chat_line(c, mock={"sleep": 0.05}) for c in ids(40)])
    first_id = harness.worker.id
    reaped = []

    def reap_once_then_finish() -> bool:
        if not reaped and harness.batch(batch_id).completed >= 4:
            reaped.append(store.reap_worker(first_id))  # as a peer would after a long pause
            # its next heartbeat is due: it learns it was reaped
            harness.clock.advance(harness.worker.config.heartbeat_interval)
        return harness.batch(batch_id).status == BatchStatus.COMPLETED

    harness.drive(reap_once_then_finish)
    assert reaped and reaped[0] > 0 and harness.worker.id != first_id
    harness.assert_exactly_once(harness.batch(batch_id), ids(40))


def test_rows_of_an_unregistered_worker_are_requeued(harness: Harness) -> None:
    store = harness.services.store
    batch_id = harness.submit([chat_line(c) for c in ids(10)])
    harness.validate(batch_id)
    assert len(store.claim_requests("phantom", 5, int(harness.clock.time()))) == 5  # never registered
    batch = harness.run_to_end(batch_id)
    harness.assert_exactly_once(batch, ids(10))


def test_a_failed_flush_keeps_its_results(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    store = harness.services.store
    real = store.record_results
    failures = []

    def flaky(worker_id, results, now):  # type: ignore[no-untyped-def]
        if results and not failures:
            failures.append(len(results))
            raise RuntimeError("database is locked")
        return real(worker_id, results, now)

    monkeypatch.setattr(store, "record_results", flaky)
    batch = harness.run_to_end(harness.submit([chat_line(c) for c in ids(20)]))
    assert failures and batch.status == BatchStatus.COMPLETED
    harness.assert_exactly_once(batch, ids(20))


def test_a_bug_while_running_a_line_fails_that_line_only(harness: Harness) -> None:
    async def broken(request: BackendRequest) -> BackendResponse:
        if request.custom_id == "r1":
            return BackendResponse(200, {"not json": {1, 2}})  # orjson cannot encode a set
        return await ScriptedBackend().execute(request)

    harness.worker.backend.execute = broken  # type: ignore[method-assign]
    batch = harness.run_to_end(harness.submit([chat_line(c) for c in ids(3)]))
    _, err = harness.assert_exactly_once(batch, ids(3))
    assert [(r["custom_id"], r["error"]["code"]) for r in err] == [("r1", "internal_error")]


def test_cancel_during_validation_settles_every_line(harness: Harness) -> None:
    store = harness.services.store
    batch_id = harness.submit([chat_line(c) for c in ids(5)])
    job = store.claim_batch_job("validator", int(harness.clock.time()))
    assert job is not None and job.kind == "validate"
    harness.services.batches.cancel(harness.project, batch_id)  # arrives while it validates
    services = harness.services
    job_runner(services.settings, services.store, services.blobs, services.clock).run(job)
    store.release_batch_job(batch_id, "validator", 0)
    batch = harness.run_to_end(batch_id)
    assert batch.status == BatchStatus.CANCELLED
    _, err = harness.assert_exactly_once(batch, ids(5))
    assert {r["error"]["code"] for r in err} == {"batch_cancelled"}


def test_a_deleted_input_file_fails_validation(harness: Harness) -> None:
    batch_id = harness.submit([chat_line("a")])
    harness.services.blobs.delete(harness.batch(batch_id).input_file_id)
    batch = harness.run_to_end(batch_id)
    assert batch.status == BatchStatus.FAILED
    assert [(e.code, e.param) for e in batch.errors or []] == [("input_file_missing", "input_file_id")]


def test_a_slow_store_call_does_not_stall_the_event_loop(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store write that waits (here 1 s, as for a SQLite lock a peer holds) runs on the
    worker's store thread: the loop, which drive() shares with the worker, keeps turning."""
    store = harness.services.store
    real = store.record_results

    def slow(worker_id, results, now):  # type: ignore[no-untyped-def]
        time.sleep(1.0)
        return real(worker_id, results, now)

    monkeypatch.setattr(store, "record_results", slow)
    batch_id = harness.submit([chat_line(c) for c in ids(5)])
    turns = [time.monotonic()]

    def done() -> bool:
        turns.append(time.monotonic())
        return harness.batch(batch_id).status == BatchStatus.COMPLETED

    harness.drive(done)
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    assert turns[-1] - turns[0] >= 1.0, "the slow write happened"
    assert max(gaps) < 0.5, f"the loop stalled for {max(gaps):.2f} s"
