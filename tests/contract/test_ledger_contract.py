"""The Store contract for the ledger (core/ledger.py), on every store: batch lines are
metered with their results, exactly once; synchronous rows are added and read back
with filters and cursor paging, newest first; batches and files keep their key."""

from __future__ import annotations

from dataclasses import replace

from contract import test_store_contract as suite
from contract.test_store_contract import (
    NOW,
    A,
    B,
    a_file,
    claim_job,
    failed,
    line_index,
    succeeded,
    validated,
)

from batchgate.core.ledger import BATCH, SYNC, LedgerEntry, LedgerQuery
from batchgate.core.models import BatchRecord, BatchStatus, RequestState
from batchgate.core.ports import Store
from batchgate.core.states import JobKind

store = suite.store  # the fixture: each test runs on every store


def everything(store: Store, **filters: object) -> list[LedgerEntry]:
    return store.list_ledger(LedgerQuery(limit=1000, **filters)).data  # type: ignore[arg-type]


def test_batches_and_files_keep_the_key_that_created_them(store: Store) -> None:
    f = a_file(store)
    keyed = replace(f, id=f.id + "k", key_id="key_1")
    store.add_file(keyed)
    assert store.get_file(keyed.id, A).key_id == "key_1"  # type: ignore[union-attr]
    assert store.get_file(f.id, A).key_id is None  # type: ignore[union-attr]
    b = validated(store, 1, input_file=keyed)
    assert store.get_batch(b.id, A).key_id is None  # type: ignore[union-attr]


def keyed_batch(store: Store, lines: int, key_id: str) -> BatchRecord:
    """An in_progress batch of `lines` lines created by the key `key_id`."""
    f = a_file(store)
    b = BatchRecord(
        f"batch_k{f.id}", A, "/v1/chat/completions", f.id, "24h", BatchStatus.VALIDATING, NOW, NOW + 86_400,
        key_id=key_id,
    )  # fmt: skip
    assert store.add_batch(b)
    assert claim_job(store, b.id, "validator") == JobKind.VALIDATE
    store.add_lines(b.id, line_index(range(1, lines + 1)), "validator")
    assert store.start_batch(b.id, lines, NOW, "validator")
    store.release_batch_job(b.id, "validator", 0)
    return b


def test_each_line_that_ran_is_metered_once_with_its_result(store: Store) -> None:
    keyed = keyed_batch(store, 3, "key_9")
    assert store.get_batch(keyed.id, A).key_id == "key_9"  # type: ignore[union-attr]
    claims = store.claim_requests("w", 10, NOW)
    assert sorted(c.line for c in claims) == [1, 2, 3]
    answered = replace(
        failed(keyed.id, 3), error_code=None, status_code=400, body=b'{"error": {"code": "context_length_exceeded"}}'
    )
    ok = [
        replace(succeeded(keyed.id, n), latency_ms=250, backend="local", model="m-1", requested_model="m")
        for n in (1, 2)
    ]
    store.record_results("w", [*ok, answered], NOW + 5)
    rows = sorted(everything(store, batch_id=keyed.id), key=lambda e: e.line or 0)
    assert [(e.kind, e.line, e.status_code, e.error_code) for e in rows] == [
        (BATCH, 1, 200, None),
        (BATCH, 2, 200, None),
        (BATCH, 3, 400, "context_length_exceeded"),
    ]
    first = rows[0]
    assert (first.project_id, first.key_id, first.endpoint, first.model, first.resolved_model, first.backend) == (
        A,
        "key_9",
        "/v1/chat/completions",
        "m",
        "m-1",
        "local",
    )
    assert (first.input_tokens, first.output_tokens, first.cost, first.latency_ms) == (3, 6, 0.5, 250)
    assert (first.started_at, first.finished_at) == (NOW + 4.75, NOW + 5)
    # a second flush of the same results (a retry after a lost answer) meters nothing more
    store.record_results("w", [*ok, answered], NOW + 6)
    assert len(everything(store, batch_id=keyed.id)) == 3


def test_lines_that_did_not_run_or_were_lost_are_not_metered(store: Store) -> None:
    b = validated(store, 3)
    claims = store.claim_requests("w", 2, NOW)
    store.reap_worker("w")  # its rows go back to the queue: its late results are not its own
    store.record_results("w", [succeeded(b.id, c.line) for c in claims], NOW)
    assert everything(store, batch_id=b.id) == []
    claims = store.claim_requests("w2", 1, NOW)
    store.record_results(
        "w2", [replace(succeeded(b.id, claims[0].line), state=RequestState.CANCELLED, status_code=None)], NOW
    )
    assert store.request_cancel(b.id, NOW)
    store.settle_unfinished(b.id, RequestState.CANCELLED, "batch_cancelled", "stop", include_running=True)
    assert everything(store, batch_id=b.id) == []


def sync_entry(project: str, at: float, **fields: object) -> LedgerEntry:
    return LedgerEntry(SYNC, project, "/v1/chat/completions", at, at + 0.1, **fields)  # type: ignore[arg-type]


def test_sync_rows_are_read_newest_first_with_filters_and_a_cursor(store: Store) -> None:
    for i in range(5):
        entry = sync_entry(A, NOW + i, key_id=f"key_{i % 2}", model="m", backend="local", status_code=200)
        store.add_ledger_entry(entry)
        assert entry.id > 0
    store.add_ledger_entry(sync_entry(B, NOW + 9, key_id="key_b", resolved_model="m", status_code=429))
    page = store.list_ledger(LedgerQuery(project_id=A, limit=2))
    assert [e.started_at for e in page.data] == [NOW + 4, NOW + 3] and page.has_more
    page = store.list_ledger(LedgerQuery(project_id=A, limit=2, before=page.data[-1].id))
    assert [e.started_at for e in page.data] == [NOW + 2, NOW + 1] and page.has_more
    page = store.list_ledger(LedgerQuery(project_id=A, limit=2, before=page.data[-1].id))
    assert [e.started_at for e in page.data] == [NOW] and not page.has_more
    assert [e.started_at for e in everything(store, project_id=A, key_id="key_1")] == [NOW + 3, NOW + 1]
    assert [e.project_id for e in everything(store, model="m")] == [B, A, A, A, A, A], "asked or resolved"
    assert [e.key_id for e in everything(store, status_code=429)] == ["key_b"]
    assert [e.started_at for e in everything(store, project_id=A, since=NOW + 1, until=NOW + 3)] == [NOW + 2, NOW + 1]
    assert everything(store, backend="upstream") == []
    assert {e.project_id for e in everything(store)} == {A, B}
    stored = everything(store, project_id=B)[0]
    assert replace(stored, id=0) == sync_entry(B, NOW + 9, key_id="key_b", resolved_model="m", status_code=429)


def test_usage_sums_per_bucket_group_and_kind(store: Store) -> None:
    hour = 3600
    start = NOW - NOW % hour  # the start of an hour
    rows = [
        sync_entry(A, start + 10.7, key_id="k1", model="m", input_tokens=3, output_tokens=4, cost=0.25),
        sync_entry(A, start + hour - 0.4, key_id="k1", model="m", input_tokens=1, output_tokens=1, cost=0.5),
        sync_entry(A, start + hour + 1, key_id="k2", model="m", input_tokens=5, output_tokens=0, cost=1.0),
        sync_entry(B, start + 20, key_id="kb", model="m", input_tokens=100, output_tokens=100, cost=9.0),
    ]
    for e in rows:
        store.add_ledger_entry(e)
    b = keyed_batch(store, 2, "k1")
    store.claim_requests("w", 10, NOW)
    store.record_results("w", [replace(succeeded(b.id, n), requested_model="m") for n in (1, 2)], start + hour + 30)

    def summed(query: LedgerQuery, group_by: tuple[str, ...], bucket: int) -> set[tuple[object, ...]]:
        return {
            (u.bucket, u.group, u.kind, u.requests, u.input_tokens, u.output_tokens, round(u.cost, 6))
            for u in store.ledger_usage(query, group_by, bucket)
        }

    assert summed(LedgerQuery(project_id=A), ("key",), hour) == {
        (start, ("k1",), SYNC, 2, 4, 5, 0.75),  # 0.4 s before the hour's end is still in it
        (start + hour, ("k2",), SYNC, 1, 5, 0, 1.0),
        (start + hour, ("k1",), BATCH, 2, 6, 12, 1.0),
    }
    assert summed(LedgerQuery(), ("project", "model"), 86_400 * 400) == {
        (start - start % (86_400 * 400), (A, "m"), SYNC, 3, 9, 5, 1.75),
        (start - start % (86_400 * 400), (A, "m"), BATCH, 2, 6, 12, 1.0),
        (start - start % (86_400 * 400), (B, "m"), SYNC, 1, 100, 100, 9.0),
    }
    assert summed(LedgerQuery(project_id=A, since=start + hour), (), hour) == {
        (start + hour, (), SYNC, 1, 5, 0, 1.0),
        (start + hour, (), BATCH, 2, 6, 12, 1.0),
    }


def test_lines_an_upstream_batch_answered_are_metered_once_when_imported(store: Store) -> None:
    f = a_file(store)
    b = BatchRecord(
        f"batch_n{f.id}", A, "/v1/chat/completions", f.id, "24h", BatchStatus.VALIDATING, NOW, NOW + 86_400,
        key_id="key_n",
    )  # fmt: skip
    assert store.add_batch(b)
    assert claim_job(store, b.id, "v") == JobKind.VALIDATE
    store.add_lines(b.id, line_index(range(1, 4)), "v")
    assert store.start_batch(b.id, 3, NOW, "v", upstream="up")
    store.release_batch_job(b.id, "v", 0)
    assert claim_job(store, b.id, "n") == JobKind.NATIVE
    rows = [(100 * i, 100, succeeded(b.id, i)) for i in (1, 2)] + [(300, 100, failed(b.id, 3))]
    store.import_results(b.id, "n", rows[:1], done=False, now=NOW)
    store.import_results(b.id, "n", rows, done=True, now=NOW + 8)  # line 1 again: a re-import
    metered = sorted(everything(store, batch_id=b.id), key=lambda e: e.line or 0)
    assert [(e.line, e.kind, e.key_id, e.finished_at) for e in metered] == [
        (1, BATCH, "key_n", NOW),
        (2, BATCH, "key_n", NOW + 8),
        (3, BATCH, "key_n", NOW + 8),
    ]
    assert [e.error_code for e in metered] == [None, None, "boom"]
