"""The Store contract: what every `Store` implementation must do, run on each of them.

Core relies on these semantics (atomic moves of the state machine in core/states.py,
claims, results written only by the worker holding the row, reaping, listing). A new
store (e.g. PostgreSQL) adds its factory to STORES and must pass the whole file; the
in-memory fake passes it too, which is what lets unit tests trust the fake.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from pgdb import new_database

from batchgate.core.errors import JobLostError
from batchgate.core.models import (
    ApiKey,
    BatchError,
    BatchRecord,
    BatchStatus,
    FileRecord,
    PromptRecord,
    RequestResult,
    RequestState,
    StoredResponse,
)
from batchgate.core.ports import Store, WorkerInfo
from batchgate.core.states import ACCEPTS_LINES, JobKind, batch_sources
from batchgate.store import SQLiteStore
from batchgate.store.postgres import PostgresStore
from batchgate.testing import InMemoryStore

STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp: InMemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(tmp / "contract.db"),
    "postgres": lambda tmp: PostgresStore(new_database(), pool_size=4, migrate=False),
}

NOW = 1_800_000_000
DAY = 86_400
A, B = "proj_a", "proj_b"


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = STORES[request.param](tmp_path)
    yield s
    s.close()


# ---- builders: every state is reached through the Store API itself --------------------

_serial = iter(range(1, 1_000_000))


def a_file(store: Store, project: str = A, purpose: str = "batch") -> FileRecord:
    f = FileRecord(f"file-{next(_serial):06d}", project, purpose, "in.jsonl", 100, NOW)
    store.add_file(f)
    return f


def a_batch(
    store: Store,
    project: str = A,
    source: str = "openai",
    expires_at: int = NOW + DAY,
    priority: int = 0,
    input_file: FileRecord | None = None,
    operation: dict[str, object] | None = None,
) -> BatchRecord:
    f = input_file or a_file(store, project)
    b = BatchRecord(
        id=f"batch_{next(_serial):06d}",
        project_id=project,
        endpoint="/v1/chat/completions",
        input_file_id=f.id,
        completion_window="24h",
        status=BatchStatus.VALIDATING,
        created_at=NOW,
        expires_at=expires_at,
        source=source,
        priority=priority,
        operation=operation,
    )
    assert store.add_batch(b)
    return b


def line_index(lines: range) -> array:
    """(line, offset, length) triples: line i at offset 100 * i, 100 bytes long."""
    return array("q", [x for i in lines for x in (i, 100 * i, 100)])


def claim_job(store: Store, batch_id: str, owner: str, now: int = NOW) -> JobKind:
    job = store.claim_batch_job(owner, now)
    assert job is not None and job.batch.id == batch_id and job.owner == owner
    return job.kind


def validated(store: Store, lines: int, chunks: int = 1, **batch: object) -> BatchRecord:
    """An in_progress batch of `lines` lines (1..lines), its index written in `chunks`."""
    b = a_batch(store, **batch)  # type: ignore[arg-type]
    assert claim_job(store, b.id, "validator") == JobKind.VALIDATE
    step = -(-lines // chunks)
    for first in range(1, lines + 1, step):
        store.add_lines(b.id, line_index(range(first, min(first + step, lines + 1))), "validator")
    assert store.start_batch(b.id, lines, NOW, "validator")
    store.release_batch_job(b.id, "validator", 0)
    return b


def succeeded(batch_id: str, line: int, attempts: int = 1, tokens: int = 3) -> RequestResult:
    return RequestResult(
        batch_id, line, RequestState.SUCCEEDED, attempts, f"req-{line}", f"c{line}",
        status_code=200, body=b'{"ok": 1}', input_tokens=tokens, output_tokens=2 * tokens, cost=0.5,
    )  # fmt: skip


def failed(batch_id: str, line: int) -> RequestResult:
    return RequestResult(
        batch_id, line, RequestState.FAILED, 1, f"req-{line}", f"c{line}", error_code="boom", error_message="no"
    )


def status(store: Store, batch_id: str) -> BatchStatus:
    batch = store.get_batch(batch_id, None)
    assert batch is not None
    return batch.status


def batch_in(store: Store, wanted: BatchStatus) -> tuple[str, str | None]:
    """A batch in status `wanted`, reached through the API; with the owner of its job
    when the status has one (an in_progress batch's job is its expiry)."""
    if wanted in (BatchStatus.VALIDATING, BatchStatus.FAILED):
        b = a_batch(store)
        claim_job(store, b.id, "owner")
        if wanted == BatchStatus.FAILED:
            assert store.fail_batch(b.id, [BatchError("bad", "bad line", 1, "body")], NOW, "owner")
            return b.id, None
        return b.id, "owner"
    if wanted in (BatchStatus.IN_PROGRESS, BatchStatus.EXPIRED):
        b = validated(store, 2, expires_at=NOW + 10)
        assert claim_job(store, b.id, "owner", NOW + 10) == JobKind.EXPIRE
        if wanted == BatchStatus.EXPIRED:
            store.settle_unfinished(b.id, RequestState.EXPIRED, "batch_expired", "late", include_running=True)
            assert store.finish_batch(b.id, "owner", BatchStatus.EXPIRED, [], None, "file-err", 0, 2, NOW)
            return b.id, None
        return b.id, "owner"
    if wanted in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        b = validated(store, 2)
        assert store.request_cancel(b.id, NOW)
        assert claim_job(store, b.id, "owner") == JobKind.CANCEL
        if wanted == BatchStatus.CANCELLED:
            store.settle_unfinished(b.id, RequestState.CANCELLED, "batch_cancelled", "stop", include_running=True)
            assert store.finish_batch(b.id, "owner", BatchStatus.CANCELLED, [], None, "file-err", 0, 2, NOW)
            return b.id, None
        return b.id, "owner"
    b = validated(store, 2)
    claims = store.claim_requests("w", 10, NOW)
    store.record_results("w", [succeeded(b.id, c.line) for c in claims], NOW)
    assert status(store, b.id) == BatchStatus.FINALIZING
    assert claim_job(store, b.id, "owner") == JobKind.FINALIZE
    if wanted == BatchStatus.COMPLETED:
        assert store.finish_batch(b.id, "owner", BatchStatus.COMPLETED, [], "file-out", None, 2, 0, NOW)
        return b.id, None
    return b.id, "owner"


# ---- projects and keys ----------------------------------------------------------------


def test_a_project_is_created_once(store: Store) -> None:
    first = store.ensure_project("acme", NOW)
    assert store.ensure_project("acme", NOW + 5) == first
    assert store.ensure_project("other", NOW).id != first.id


def test_keys_are_found_by_hash_until_revoked(store: Store) -> None:
    project = store.ensure_project("acme", NOW)
    store.add_api_key(ApiKey("key_1", project.id, "ci", "bg-abc", NOW), "hash-1")
    store.add_api_key(ApiKey("key_2", project.id, "", "bg-def", NOW + 1), "hash-2")
    found = store.find_api_key("hash-1")
    assert found is not None and (found.id, found.project_id, found.project_name) == ("key_1", project.id, "acme")
    assert store.find_api_key("unknown") is None
    assert [k.id for k in store.list_api_keys()] == ["key_1", "key_2"]
    assert store.revoke_api_key("key_1", NOW + 2)
    assert not store.revoke_api_key("key_1", NOW + 3), "a revoked key is not revoked twice"
    assert not store.revoke_api_key("key_404", NOW)
    assert store.find_api_key("hash-1") is None
    assert {k.id: k.revoked_at for k in store.list_api_keys()} == {"key_1": NOW + 2, "key_2": None}


# ---- files ------------------------------------------------------------------------


def test_a_file_is_seen_only_from_its_project(store: Store) -> None:
    f = a_file(store, A)
    assert store.get_file(f.id, A) == f
    assert store.get_file(f.id, None) == f, "no project: internal reads"
    assert store.get_file(f.id, B) is None
    assert not store.delete_file(f.id, B)
    assert store.delete_file(f.id, A)
    assert store.get_file(f.id, A) is None
    assert not store.delete_file(f.id, A)


def test_files_list_in_order_by_purpose_and_in_pages(store: Store) -> None:
    files = [a_file(store, A, purpose) for purpose in ("batch", "batch_output", "batch", "batch")]
    a_file(store, B)
    ids = [f.id for f in files]
    assert [f.id for f in store.list_files(A, None, None, 10, "asc").data] == ids
    assert [f.id for f in store.list_files(A, None, None, 10, "desc").data] == ids[::-1]
    batch_only = store.list_files(A, "batch", None, 2, "asc")
    assert [f.id for f in batch_only.data] == [ids[0], ids[2]] and batch_only.has_more
    rest = store.list_files(A, "batch", ids[2], 2, "asc")
    assert [f.id for f in rest.data] == [ids[3]] and not rest.has_more
    assert [f.id for f in store.list_files(A, None, ids[2], 10, "desc").data] == [ids[1], ids[0]]


def test_files_after_another_projects_id_is_like_an_unknown_id(store: Store) -> None:
    mine = [a_file(store, A) for _ in range(3)]
    theirs = a_file(store, B)
    for order in ("asc", "desc"):
        unknown = store.list_files(A, None, "file-unknown", 10, order)
        foreign = store.list_files(A, None, theirs.id, 10, order)
        assert (foreign.data, foreign.has_more) == (unknown.data, unknown.has_more) == ([], False)
    assert len(store.list_files(A, None, None, 10, "asc").data) == len(mine)


def test_a_file_is_in_use_while_a_batch_on_it_is_active(store: Store) -> None:
    b = validated(store, 1)
    assert store.file_in_use(b.input_file_id)
    assert not store.file_in_use(a_file(store).id)
    done, _ = batch_in(store, BatchStatus.COMPLETED)
    done_batch = store.get_batch(done, None)
    assert done_batch is not None and not store.file_in_use(done_batch.input_file_id)


def test_expired_files_are_deleted_unless_an_active_batch_reads_them(store: Store) -> None:
    def expiring(at: int | None, project: str = A) -> FileRecord:
        f = FileRecord(f"file-{next(_serial):06d}", project, "batch", "in.jsonl", 10, NOW, expires_at=at)
        store.add_file(f)
        return f

    due, due_b, later, kept = expiring(NOW - 5), expiring(NOW, B), expiring(NOW + 60), expiring(None)
    input_file = expiring(NOW - 100)  # the input of an active batch: it still reads it
    validated(store, 1, input_file=input_file)
    deleted = store.delete_expired_files(NOW, 10)
    assert sorted(f.id for f in deleted) == sorted([due.id, due_b.id]), "every project's due files, no others"
    assert deleted[0].expires_at is not None and deleted[0].expires_at <= NOW
    assert store.get_file(due.id, A) is None and store.get_file(later.id, A) is not None
    assert store.get_file(kept.id, A) is not None and store.get_file(input_file.id, A) is not None
    assert store.delete_expired_files(NOW, 10) == []
    assert [f.id for f in store.delete_expired_files(NOW + 60, 10)] == [later.id]
    many = [expiring(NOW - i) for i in range(5)]
    assert len(store.delete_expired_files(NOW, 3)) == 3, "at most `limit` a call"
    assert len(store.delete_expired_files(NOW, 3)) == 2 and all(store.get_file(f.id, A) is None for f in many)


# ---- batches and listing ---------------------------------------------------------------


def test_a_batch_is_seen_only_from_its_project(store: Store) -> None:
    b = a_batch(store, A, source="operation")
    got = store.get_batch(b.id, A)
    assert got is not None and (got.id, got.status, got.source, got.expires_at) == (
        b.id, BatchStatus.VALIDATING, "operation", b.expires_at,
    )  # fmt: skip
    assert store.get_batch(b.id, B) is None
    assert store.get_batch("batch_unknown", None) is None


def test_batches_list_newest_first_in_pages(store: Store) -> None:
    ids = [a_batch(store, A).id for _ in range(5)]
    a_batch(store, B)
    first = store.list_batches(A, None, 2)
    assert [b.id for b in first.data] == ids[:-3:-1] and first.has_more
    last = store.list_batches(A, ids[1], 2)
    assert [b.id for b in last.data] == [ids[0]] and not last.has_more


def test_batches_filter_by_source_before_paging(store: Store) -> None:
    """Operation batches among many others: every page is full while more match."""
    ops = []
    for i in range(12):
        b = a_batch(store, A, source="operation" if i % 4 == 0 else "openai")
        if b.source == "operation":
            ops.append(b.id)
    newest_first = ops[::-1]
    page = store.list_batches(A, None, 2, source="operation")
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    page = store.list_batches(A, page.data[-1].id, 2, source="operation")
    assert [b.id for b in page.data] == newest_first[2:] and not page.has_more
    assert all(b.source == "openai" for b in store.list_batches(A, None, 100, source="openai").data)
    assert store.list_batches(B, None, 10, source="operation").data == []


def test_batches_after_another_projects_id_is_like_an_unknown_id(store: Store) -> None:
    for _ in range(3):
        a_batch(store, A)
    theirs = a_batch(store, B)
    unknown = store.list_batches(A, "batch_unknown", 10)
    foreign = store.list_batches(A, theirs.id, 10)
    assert (foreign.data, foreign.has_more) == (unknown.data, unknown.has_more) == ([], False)
    assert store.list_batches(A, theirs.id, 10, source="openai").data == []


# ---- the state machine: batches ------------------------------------------------------


def _finish(target: BatchStatus) -> Callable[[Store, str, str], bool]:
    return lambda store, batch_id, owner: store.finish_batch(batch_id, owner, target, [], None, None, 0, 0, NOW + 7)


MOVES: dict[BatchStatus, Callable[[Store, str, str], bool]] = {
    BatchStatus.IN_PROGRESS: lambda store, batch_id, owner: store.start_batch(batch_id, 2, NOW + 7, owner),
    BatchStatus.FAILED: lambda store, batch_id, owner: store.fail_batch(
        batch_id, [BatchError("x", "y")], NOW + 7, owner
    ),
    BatchStatus.CANCELLING: lambda store, batch_id, owner: store.request_cancel(batch_id, NOW + 7),
    BatchStatus.COMPLETED: _finish(BatchStatus.COMPLETED),
    BatchStatus.CANCELLED: _finish(BatchStatus.CANCELLED),
    BatchStatus.EXPIRED: _finish(BatchStatus.EXPIRED),
}


@pytest.mark.parametrize("source", list(BatchStatus))
@pytest.mark.parametrize("target", list(MOVES))
def test_a_batch_moves_only_as_the_table_allows(store: Store, source: BatchStatus, target: BatchStatus) -> None:
    batch_id, owner = batch_in(store, source)
    before = store.get_batch(batch_id, None)
    moved = MOVES[target](store, batch_id, owner or "owner")
    after = store.get_batch(batch_id, None)
    assert before is not None and after is not None
    allowed = source in batch_sources(target)
    # validation also hands its lines to a batch cancelled meanwhile, which stays cancelling
    accepted = source in ACCEPTS_LINES if target == BatchStatus.IN_PROGRESS else allowed
    assert moved == accepted
    assert after.status == (target if allowed else source)
    stamp = f"{target.value}_at"
    assert getattr(after, stamp) == (NOW + 7 if allowed else getattr(before, stamp))


def test_the_moves_need_the_job_owner(store: Store) -> None:
    batch_id, _ = batch_in(store, BatchStatus.VALIDATING)
    assert not store.start_batch(batch_id, 1, NOW, "someone-else")
    assert not store.fail_batch(batch_id, [BatchError("x", "y")], NOW, "someone-else")
    with pytest.raises(JobLostError):
        store.add_lines(batch_id, line_index(range(1, 2)), "someone-else")
    with pytest.raises(JobLostError):
        store.clear_requests(batch_id, "someone-else")
    assert status(store, batch_id) == BatchStatus.VALIDATING
    finalizing, _ = batch_in(store, BatchStatus.FINALIZING)
    assert not store.finish_batch(finalizing, "someone-else", BatchStatus.COMPLETED, [], None, None, 0, 0, NOW)
    assert status(store, finalizing) == BatchStatus.FINALIZING


def test_finishing_registers_the_result_files_and_clears_the_owner(store: Store) -> None:
    batch_id, owner = batch_in(store, BatchStatus.FINALIZING)
    assert owner is not None
    out = FileRecord("file-out-1", A, "batch_output", "out.jsonl", 10, NOW)
    err = FileRecord("file-err-1", A, "batch_output", "err.jsonl", 5, NOW)
    assert store.finish_batch(batch_id, owner, BatchStatus.COMPLETED, [out, err], out.id, err.id, 1, 1, NOW + 9)
    batch = store.get_batch(batch_id, None)
    assert batch is not None
    assert (batch.output_file_id, batch.error_file_id, batch.completed, batch.failed, batch.total) == (
        out.id, err.id, 1, 1, 2,
    )  # fmt: skip
    assert store.get_file(out.id, A) == out and store.get_file(err.id, A) == err
    assert store.claim_batch_job("anyone", NOW + DAY * 2) is None, "a finished batch needs no job"
    with pytest.raises(ValueError):
        store.finish_batch(batch_id, owner, BatchStatus.FINALIZING, [], None, None, 0, 0, NOW)


def test_a_failed_batch_keeps_its_errors(store: Store) -> None:
    b = a_batch(store)
    claim_job(store, b.id, "v")
    errors = [BatchError("missing_required_parameter", "no body", 2, "body"), BatchError("input_file_missing", "gone")]
    assert store.fail_batch(b.id, errors, NOW + 1, "v")
    batch = store.get_batch(b.id, A)
    assert batch is not None and batch.errors == errors and batch.failed_at == NOW + 1


# ---- batch jobs -----------------------------------------------------------------------


def test_batch_jobs_by_status_one_owner_at_a_time(store: Store) -> None:
    b = a_batch(store)
    assert claim_job(store, b.id, "w1") == JobKind.VALIDATE
    assert store.claim_batch_job("w2", NOW) is None, "held by w1"
    store.release_batch_job(b.id, "w2", 0)  # not w2's to release: no effect
    assert store.claim_batch_job("w2", NOW) is None
    store.release_batch_job(b.id, "w1", NOW + 5)
    assert store.claim_batch_job("w2", NOW + 4) is None, "asleep until its wake-up time"
    assert claim_job(store, b.id, "w2", NOW + 5) == JobKind.VALIDATE


def test_an_in_progress_batch_needs_a_job_only_once_expired(store: Store) -> None:
    b = validated(store, 3, expires_at=NOW + 60)
    assert store.claim_batch_job("w", NOW + 59) is None
    assert claim_job(store, b.id, "w", NOW + 60) == JobKind.EXPIRE


def test_a_cancel_wakes_a_sleeping_job(store: Store) -> None:
    b = a_batch(store)
    claim_job(store, b.id, "v")
    store.release_batch_job(b.id, "v", NOW + 1000)
    assert store.request_cancel(b.id, NOW)
    assert claim_job(store, b.id, "w") == JobKind.CANCEL


def test_a_redone_validation_starts_from_nothing(store: Store) -> None:
    b = a_batch(store)
    claim_job(store, b.id, "v")
    store.add_lines(b.id, line_index(range(1, 4)), "v")
    store.clear_requests(b.id, "v")
    store.add_lines(b.id, line_index(range(1, 3)), "v")
    assert store.start_batch(b.id, 2, NOW, "v")
    assert [c.line for c in store.claim_requests("w", 10, NOW)] == [1, 2]


# ---- claims -------------------------------------------------------------------------


def test_claims_walk_the_index_in_order_across_chunks(store: Store) -> None:
    b = validated(store, 25, chunks=3)
    claims = store.claim_requests("w", 10, NOW) + store.claim_requests("w", 100, NOW)
    assert [c.line for c in claims] == list(range(1, 26))
    assert all((c.batch_id, c.input_file_id, c.offset, c.length, c.attempts) == (
        b.id, b.input_file_id, 100 * c.line, 100, 1) for c in claims)  # fmt: skip
    assert store.claim_requests("w", 10, NOW) == []
    assert store.count_running(b.id) == 25


def test_claims_only_from_running_unexpired_batches(store: Store) -> None:
    upstream = a_batch(store)
    claim_job(store, upstream.id, "v")
    store.add_lines(upstream.id, line_index(range(1, 4)), "v")
    assert store.start_batch(upstream.id, 3, NOW, "v", upstream="openai-up")
    store.release_batch_job(upstream.id, "v", 0)
    assert claim_job(store, upstream.id, "n") == JobKind.NATIVE
    cancelled = validated(store, 3)
    expired = validated(store, 3, expires_at=NOW + 5)
    store.request_cancel(cancelled.id, NOW)
    a_batch(store)  # validating
    assert store.claim_requests("w", 10, NOW + 5) == [], "an upstream runs its own lines"
    assert [c.batch_id for c in store.claim_requests("w", 10, NOW + 4)] == [expired.id] * 3


def test_claim_slots_are_shared_and_higher_priority_goes_first(store: Store) -> None:
    big = validated(store, 100)
    small = validated(store, 4)
    urgent = validated(store, 2, priority=5)
    claims = store.claim_requests("w", 9, NOW)
    by_batch = {b: [c.line for c in claims if c.batch_id == b] for b in (big.id, small.id, urgent.id)}
    # the urgent batch's class first; the rest shared, what one cannot use going to the other
    assert by_batch == {urgent.id: [1, 2], big.id: [1, 2, 3, 4], small.id: [1, 2, 3]}
    assert claims[0].batch_id == urgent.id


def test_requeued_rows_are_claimed_first_with_their_attempts(store: Store) -> None:
    b = validated(store, 6)
    store.register_worker(WorkerInfo("dead", "h", 1, NOW))
    assert [c.line for c in store.claim_requests("dead", 3, NOW)] == [1, 2, 3]
    assert store.reap_worker("dead") == 3
    assert store.count_running(b.id) == 0
    claims = store.claim_requests("w", 4, NOW)
    assert [(c.line, c.attempts) for c in claims] == [(1, 2), (2, 2), (3, 2), (4, 1)]


# ---- results ------------------------------------------------------------------------


def test_results_update_live_counts_and_end_the_run(store: Store) -> None:
    b = validated(store, 3)
    claims = store.claim_requests("w", 10, NOW)
    store.record_results("w", [succeeded(b.id, 1), failed(b.id, 2)], NOW + 3)
    batch = store.get_batch(b.id, A)
    assert batch is not None
    assert (batch.status, batch.completed, batch.failed, batch.input_tokens, batch.output_tokens, batch.cost) == (
        BatchStatus.IN_PROGRESS, 1, 1, 3, 6, 0.5,
    )  # fmt: skip
    assert store.count_running(b.id) == 1
    store.record_results("w", [succeeded(b.id, claims[2].line)], NOW + 4)
    batch = store.get_batch(b.id, A)
    assert batch is not None and (batch.status, batch.finalizing_at) == (BatchStatus.FINALIZING, NOW + 4)
    assert claim_job(store, b.id, "f", NOW + 4) == JobKind.FINALIZE


def test_only_the_worker_holding_a_row_records_its_result(store: Store) -> None:
    b = validated(store, 2)
    store.register_worker(WorkerInfo("slow", "h", 1, NOW))
    store.claim_requests("slow", 1, NOW)
    store.reap_worker("slow")  # presumed dead: the row is back in the queue
    store.record_results("slow", [succeeded(b.id, 1)], NOW)
    batch = store.get_batch(b.id, A)
    assert batch is not None and batch.completed == 0, "a reaped worker's late result is dropped"
    [again, second] = store.claim_requests("fast", 5, NOW)
    store.record_results("other", [succeeded(b.id, again.line)], NOW)
    store.record_results("fast", [succeeded(b.id, again.line, attempts=2), succeeded(b.id, second.line)], NOW)
    store.record_results("fast", [succeeded(b.id, again.line)], NOW)  # recorded already: not twice
    batch = store.get_batch(b.id, A)
    assert batch is not None and (batch.completed, batch.status) == (2, BatchStatus.FINALIZING)


def test_a_line_twice_in_one_flush_counts_once(store: Store) -> None:
    b = validated(store, 2)
    [first, _] = store.claim_requests("w", 2, NOW)
    store.record_results("w", [succeeded(b.id, first.line), succeeded(b.id, first.line)], NOW)
    batch = store.get_batch(b.id, A)
    assert batch is not None and (batch.completed, batch.input_tokens, batch.status) == (1, 3, BatchStatus.IN_PROGRESS)
    assert store.count_running(b.id) == 1


@pytest.mark.parametrize("state", [RequestState.QUEUED, RequestState.RUNNING])
def test_a_run_cannot_end_in_an_unfinished_state(store: Store, state: RequestState) -> None:
    b = validated(store, 1)
    store.claim_requests("w", 1, NOW)
    with pytest.raises(ValueError):
        store.record_results("w", [RequestResult(b.id, 1, state, 1, "r")], NOW)
    assert store.count_running(b.id) == 1


def test_finished_rows_come_back_in_line_order(store: Store) -> None:
    b = validated(store, 3)
    store.claim_requests("w", 3, NOW)
    store.record_results("w", [failed(b.id, 3), succeeded(b.id, 1), succeeded(b.id, 2)], NOW)
    rows = list(store.iter_finished(b.id))
    assert [(r.line, r.custom_id, r.offset, r.length, r.state) for r in rows] == [
        (1, "c1", 100, 100, RequestState.SUCCEEDED),
        (2, "c2", 200, 100, RequestState.SUCCEEDED),
        (3, "c3", 300, 100, RequestState.FAILED),
    ]
    assert (rows[0].request_id, rows[0].status_code, rows[0].body, rows[0].cost) == ("req-1", 200, b'{"ok": 1}', 0.5)
    assert (rows[2].error_code, rows[2].error_message, rows[2].body) == ("boom", "no", None)


# ---- settling a cancel or an expiry ----------------------------------------------------


def test_settling_ends_waiting_lines_then_running_ones(store: Store) -> None:
    b = validated(store, 5)
    store.claim_requests("w", 2, NOW)  # lines 1-2 running, 3-5 never claimed
    store.request_cancel(b.id, NOW)
    settled = store.settle_unfinished(b.id, RequestState.CANCELLED, "batch_cancelled", "stop", include_running=False)
    assert settled == 3 and store.count_running(b.id) == 2
    assert store.claim_requests("w2", 10, NOW) == [], "a settled batch has nothing to claim"
    store.record_results("w", [succeeded(b.id, 1)], NOW)  # a running line still finishes
    assert store.settle_unfinished(b.id, RequestState.CANCELLED, "batch_cancelled", "stop", include_running=True) == 1
    rows = {r.line: r for r in store.iter_finished(b.id)}
    assert {line: r.state for line, r in rows.items()} == {
        1: RequestState.SUCCEEDED, **{i: RequestState.CANCELLED for i in (2, 3, 4, 5)},
    }  # fmt: skip
    assert (rows[4].custom_id, rows[4].offset, rows[4].error_code) == (None, 400, "batch_cancelled")
    store.record_results("w", [succeeded(b.id, 2)], NOW)  # settled meanwhile: dropped
    assert {r.line: r.state for r in store.iter_finished(b.id)}[2] == RequestState.CANCELLED
    assert store.settle_unfinished(b.id, RequestState.CANCELLED, "batch_cancelled", "stop", include_running=True) == 0


@pytest.mark.parametrize("state", [RequestState.SUCCEEDED, RequestState.FAILED, RequestState.RUNNING])
def test_lines_are_settled_only_as_cancelled_or_expired(store: Store, state: RequestState) -> None:
    b = validated(store, 2)
    with pytest.raises(ValueError):
        store.settle_unfinished(b.id, state, "x", "y", include_running=True)


# ---- workers ------------------------------------------------------------------------


def test_heartbeats_until_reaped(store: Store) -> None:
    store.register_worker(WorkerInfo("w1", "host", 11, NOW))
    store.register_worker(WorkerInfo("w2", "host", 12, NOW))
    assert store.heartbeat("w1", NOW + 2.5)
    assert {w.id: w.heartbeat_at for w in store.list_workers()} == {"w1": NOW + 2.5, "w2": NOW}
    assert store.reap_worker("w1") == 0
    assert not store.heartbeat("w1", NOW + 3), "a reaped worker learns it was reaped"
    assert [w.id for w in store.list_workers()] == ["w2"]


def test_reaping_requeues_rows_and_releases_jobs(store: Store) -> None:
    b = validated(store, 4)
    job_batch = a_batch(store)
    store.register_worker(WorkerInfo("dead", "host", 1, NOW))
    claim_job(store, job_batch.id, "dead")
    store.claim_requests("dead", 3, NOW)
    assert store.reap_worker("dead") == 3
    assert store.count_running(b.id) == 0
    assert claim_job(store, job_batch.id, "alive") == JobKind.VALIDATE
    assert [c.line for c in store.claim_requests("alive", 10, NOW)] == [1, 2, 3, 4]


def test_orphans_of_unregistered_workers_are_requeued(store: Store) -> None:
    b = validated(store, 3)
    job_batch = a_batch(store)
    store.register_worker(WorkerInfo("alive", "host", 1, NOW))
    store.claim_requests("alive", 1, NOW)
    store.claim_requests("phantom", 2, NOW)  # never registered (or gone with its rows)
    claim_job(store, job_batch.id, "phantom")
    assert store.requeue_orphans() == 2
    assert store.count_running(b.id) == 1, "the registered worker keeps its row"
    assert claim_job(store, job_batch.id, "alive") == JobKind.VALIDATE
    assert [c.line for c in store.claim_requests("alive", 10, NOW)] == [2, 3]


# ---- native passthrough -----------------------------------------------------------------


def test_a_passed_through_batch_mirrors_and_imports_its_upstream(store: Store) -> None:
    b = a_batch(store)
    claim_job(store, b.id, "v")
    store.add_lines(b.id, line_index(range(1, 4)), "v")
    assert store.start_batch(b.id, 3, NOW, "v", upstream="up")
    store.release_batch_job(b.id, "v", 0)
    assert claim_job(store, b.id, "n") == JobKind.NATIVE
    store.set_upstream_batch(b.id, "n", "up_batch_1")
    store.mirror_counts(b.id, "n", 1, 0)
    batch = store.get_batch(b.id, A)
    assert batch is not None and (batch.upstream, batch.upstream_batch_id, batch.completed) == ("up", "up_batch_1", 1)
    with pytest.raises(JobLostError):
        store.mirror_counts(b.id, "other", 2, 0)
    rows = [(100 * i, 100, succeeded(b.id, i)) for i in (1, 2)] + [(300, 100, failed(b.id, 3))]
    store.import_results(b.id, "n", rows[:1], done=False, now=NOW)
    store.import_results(b.id, "n", rows, done=True, now=NOW + 8)
    batch = store.get_batch(b.id, A)
    assert batch is not None
    assert (batch.status, batch.finalizing_at, batch.completed, batch.failed, batch.input_tokens) == (
        BatchStatus.FINALIZING, NOW + 8, 2, 1, 6,
    )  # fmt: skip
    assert [r.state for r in store.iter_finished(b.id)] == [RequestState.SUCCEEDED] * 2 + [RequestState.FAILED]


# ---- prompt templates ------------------------------------------------------------------


def test_prompts_versions_and_publishing(store: Store) -> None:
    assert store.add_prompt(PromptRecord(A, "triage", "Triage", "tickets", NOW))
    assert not store.add_prompt(PromptRecord(A, "triage", "again", "", NOW)), "one slug per project"
    assert store.add_prompt(PromptRecord(A, "alpha", "", "", NOW))
    assert store.add_prompt(PromptRecord(B, "triage", "", "", NOW))
    assert [p.slug for p in store.list_prompts(A)] == ["alpha", "triage"]
    messages = [{"role": "user", "content": "{{x}}"}]
    v1 = store.add_prompt_version(A, "triage", messages, {"model": "m"}, NOW)
    v2 = store.add_prompt_version(A, "triage", messages, {}, NOW + 1)
    assert (v1.version, v2.version) == (1, 2)
    assert store.add_prompt_version(B, "triage", messages, {}, NOW).version == 1, "numbered per project"
    assert store.get_prompt_version(A, "triage", None) is None, "nothing published yet"
    assert not store.publish_prompt_version(A, "triage", 3)
    assert store.publish_prompt_version(A, "triage", 1)
    assert store.get_prompt_version(A, "triage", None) == v1
    assert store.get_prompt_version(A, "triage", 2) == v2
    assert store.get_prompt_version(A, "triage", 9) is None
    assert [v.version for v in store.list_prompt_versions(A, "triage")] == [1, 2]
    prompt = store.get_prompt(A, "triage")
    assert prompt is not None and (prompt.name, prompt.published_version) == ("Triage", 1)
    assert store.get_prompt(A, "nope") is None


# ---- stored responses ------------------------------------------------------------------


def test_stored_responses_are_per_project_and_deletable(store: Store) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    stored = StoredResponse("resp_1", A, NOW, {"id": "resp_1", "object": "response", "output": []}, messages)
    store.add_response(stored)
    assert store.get_response("resp_1", A) == stored
    assert store.get_response("resp_1", B) is None, "another project's response is not found"
    assert store.get_response("resp_2", A) is None
    assert not store.delete_response("resp_1", B)
    assert store.delete_response("resp_1", A)
    assert store.get_response("resp_1", A) is None
    assert not store.delete_response("resp_1", A)


def test_stored_responses_keep_their_input_items(store: Store) -> None:
    items = [{"id": "msg_1", "type": "message", "role": "user", "status": "completed", "content": []}]
    stored = StoredResponse("resp_n", A, NOW, {"id": "resp_n"}, [{"role": "user", "content": "x"}], items, True)
    store.add_response(stored)
    assert store.get_response("resp_n", A) == stored


def test_expired_responses_are_deleted_oldest_first_a_chunk_at_a_time(store: Store) -> None:
    for i in range(5):
        store.add_response(StoredResponse(f"resp_{i}", A if i % 2 else B, NOW + i, {"id": f"resp_{i}"}, []))
    assert store.delete_expired_responses(NOW + 3, limit=2) == 2
    assert store.get_response("resp_0", B) is None and store.get_response("resp_1", A) is None
    assert store.get_response("resp_2", B) is not None, "past the chunk: kept for the next one"
    assert store.delete_expired_responses(NOW + 3, limit=10) == 1
    assert store.get_response("resp_2", B) is None
    assert store.get_response("resp_3", A) is not None, "created at the cut: not expired"
    assert store.delete_expired_responses(NOW + 3, limit=10) == 0


# ---- files a batch needs (issue 11 #5, #10) ---------------------------------------------


def test_a_batch_is_added_only_while_its_files_are_there(store: Store) -> None:
    gone = a_file(store)
    assert store.delete_file(gone.id, A)
    for missing in (gone, a_file(store, B)):  # deleted, or another project's
        b = BatchRecord(f"batch_{next(_serial):06d}", A, "/v1/chat/completions", missing.id, "24h",
                        BatchStatus.VALIDATING, NOW, NOW + DAY)  # fmt: skip
        assert not store.add_batch(b) and store.get_batch(b.id, None) is None
    items = a_file(store)
    assert store.delete_file(items.id, A)
    b = BatchRecord(f"batch_{next(_serial):06d}", A, "/v1/chat/completions", a_file(store).id, "24h",
                    BatchStatus.VALIDATING, NOW, NOW + DAY, source="operation",
                    operation={"items_file_id": items.id})  # fmt: skip
    assert not store.add_batch(b) and store.get_batch(b.id, None) is None


def test_a_file_a_batch_needs_is_not_deleted(store: Store) -> None:
    active = validated(store, 1)
    assert store.file_in_use(active.input_file_id)
    assert not store.delete_file(active.input_file_id, A) and store.get_file(active.input_file_id, A)
    done, _ = batch_in(store, BatchStatus.COMPLETED)
    done_batch = store.get_batch(done, None)
    assert done_batch is not None and store.delete_file(done_batch.input_file_id, A)
    # an operation batch reads its output from its files for as long as it exists
    items = a_file(store)
    op = a_batch(store, source="operation", operation={"items_file_id": items.id})
    for file_id in (op.input_file_id, items.id):
        assert store.file_in_use(file_id)
        assert not store.delete_file(file_id, A) and store.get_file(file_id, A) is not None
    unrelated = a_file(store)
    assert not store.file_in_use(unrelated.id) and store.delete_file(unrelated.id, A)


def at_once(*calls: Callable[[], bool]) -> list[bool]:
    """The calls' results, each run on its own thread, all released together."""
    results: list[bool] = [False] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_creating_a_batch_and_deleting_its_file_at_once_never_both_win(store: Store) -> None:
    for _ in range(30):
        f = a_file(store)
        b = BatchRecord(f"batch_{next(_serial):06d}", A, "/v1/chat/completions", f.id, "24h",
                        BatchStatus.VALIDATING, NOW, NOW + DAY)  # fmt: skip
        added, deleted = at_once(partial(store.add_batch, b), partial(store.delete_file, f.id, A))
        assert added != deleted, (added, deleted)  # exactly one wins
        assert (store.get_batch(b.id, None) is not None) == added
        assert (store.get_file(f.id, A) is not None) == added
