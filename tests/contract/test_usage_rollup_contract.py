"""The Store contract for the ledger's hourly rollup (core/rollup.py, migration 0014), on
every store: after synchronous rows, batch lines recorded by workers and lines imported
from an upstream batch (one imported twice), usage read through the rollup equals the sums
of the ledger's own rows, for whole-hour and partial-hour ranges, filters, groups and
buckets; queries the rollup cannot answer (group by batch, a batch filter) still sum the
ledger."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract import test_store_contract as suite
from contract.test_ledger_contract import keyed_batch
from contract.test_store_contract import NOW, A, B, a_file, claim_job, failed, line_index, succeeded

from batchgate.core.ledger import SYNC, LedgerEntry, LedgerQuery, UsageRow, usage_of
from batchgate.core.models import BatchRecord, BatchStatus
from batchgate.core.ports import Store
from batchgate.core.states import JobKind

store = suite.store  # the fixture: each test runs on every store
HOUR = 3600


def _sync(store: Store, project: str, key: str | None, model: str | None, started: float, cost: float) -> None:
    store.add_ledger_entry(
        LedgerEntry(
            SYNC, project, "/v1/chat/completions", started, started + 0.2, key, model=model, resolved_model="r-" + (model or "x"),
            backend="local" if model else None, input_tokens=7, output_tokens=11, cost=cost, latency_ms=200,
            status_code=200 if model else 500, error_code=None if model else "upstream_error",
        )
    )  # fmt: skip


def _fill(store: Store) -> None:
    """Mixed rows over four hours, two projects, keys, models (and rows without them)."""
    for i, started in enumerate(
        (NOW - 1.5, NOW + 0.4, NOW + 1799.9, NOW + HOUR - 0.01, NOW + 2 * HOUR + 5, NOW + 3 * HOUR + 2)
    ):
        _sync(store, A, "key_1" if i % 2 else "key_2", ("m", "n", None)[i % 3], started, 0.001 * (i + 1))
    _sync(store, B, None, "m", NOW + 30.25, 0.5)
    # batch lines, recorded by a worker (started = now - latency)
    keyed = keyed_batch(store, 4, "key_1")
    claims = store.claim_requests("w", 10, NOW)
    assert len(claims) == 4
    results = [
        replace(succeeded(keyed.id, 1), latency_ms=250, backend="local", model="m-1", requested_model="m"),
        replace(succeeded(keyed.id, 2), latency_ms=9000, backend="local", model="m-1", requested_model="m"),
        replace(succeeded(keyed.id, 3, tokens=5), backend="other", model="n", requested_model="n"),
        failed(keyed.id, 4),
    ]
    store.record_results("w", results[:2], NOW + HOUR + 5)  # line 2 started in the hour before
    store.record_results("w", results[2:], NOW + 2 * HOUR + 1)
    assert store.claim_batch_job("finalizer", NOW) is not None  # its finalize job, out of the way
    # lines an upstream batch answered, imported (line 1 twice: metered once)
    f = a_file(store)
    b = BatchRecord(
        f"batch_u{f.id}", A, "/v1/embeddings", f.id, "24h", BatchStatus.VALIDATING, NOW, NOW + 86_400,
        key_id="key_3",
    )  # fmt: skip
    assert store.add_batch(b)
    assert claim_job(store, b.id, "v") == JobKind.VALIDATE
    store.add_lines(b.id, line_index(range(1, 4)), "v")
    assert store.start_batch(b.id, 3, NOW, "v", upstream="up")
    store.release_batch_job(b.id, "v", 0)
    assert claim_job(store, b.id, "n") == JobKind.NATIVE
    rows = [(100 * i, 100, replace(succeeded(b.id, i), model="e", requested_model="e")) for i in (1, 2)]
    rows.append((300, 100, failed(b.id, 3)))
    store.import_results(b.id, "n", rows[:1], done=False, now=NOW + 10)
    store.import_results(b.id, "n", rows, done=True, now=NOW + HOUR + 20)


def _norm(rows: list[UsageRow]) -> list[tuple[object, ...]]:
    return sorted(
        ((r.bucket, tuple(str(g) for g in r.group), r.kind, r.requests, r.input_tokens, r.output_tokens, round(r.cost, 9))
         for r in rows),
    )  # fmt: skip


def _expected(store: Store, query: LedgerQuery, group_by: tuple[str, ...], seconds: int) -> list[tuple[object, ...]]:
    rows = store.list_ledger(replace(query, limit=1000)).data
    return _norm(usage_of(rows, group_by, seconds))


QUERIES = [
    LedgerQuery(),
    LedgerQuery(since=NOW, until=NOW + 3 * HOUR),  # whole hours
    LedgerQuery(since=NOW - 10, until=NOW + 2 * HOUR + 100),  # partial hours at both edges
    LedgerQuery(since=NOW + 0.5, until=NOW + HOUR - 0.005),  # within an hour
    LedgerQuery(since=NOW + 1000),
    LedgerQuery(until=NOW + HOUR + 1),
    LedgerQuery(project_id=A, since=NOW - 3 * HOUR),
    LedgerQuery(key_id="key_1"),
    LedgerQuery(model="m-1"),  # as resolved
    LedgerQuery(model="m", backend="local", endpoint="/v1/chat/completions"),
    LedgerQuery(project_id=B, since=NOW + 20.5, until=NOW + 5 * HOUR),
]
GROUPS = [(), ("key",), ("project", "model"), ("backend", "endpoint", "key", "model", "project")]


@pytest.mark.parametrize("seconds", [HOUR, 86_400])
def test_usage_from_the_rollup_equals_the_ledger_sums(store: Store, seconds: int) -> None:
    _fill(store)
    assert len(store.list_ledger(LedgerQuery(limit=1000)).data) == 7 + 4 + 3
    for query in QUERIES:
        for group_by in GROUPS:
            got = _norm(store.ledger_usage(query, group_by, seconds))
            assert got == _expected(store, query, group_by, seconds), (query, group_by)


def test_usage_the_rollup_cannot_answer_sums_the_ledger(store: Store) -> None:
    _fill(store)
    batch_id = next(e.batch_id for e in store.list_ledger(LedgerQuery(limit=1000)).data if e.batch_id)
    for query, group_by in [
        (LedgerQuery(), ("batch",)),
        (LedgerQuery(batch_id=batch_id), ("model",)),
        (LedgerQuery(status_code=200), ()),
    ]:
        assert _norm(store.ledger_usage(query, group_by, HOUR)) == _expected(store, query, group_by, HOUR)


def test_rows_without_key_or_model_group_as_none(store: Store) -> None:
    _sync(store, A, None, None, NOW + 5, 0.25)
    (row,) = store.ledger_usage(LedgerQuery(), ("key", "model", "backend"), HOUR)
    assert (row.bucket, row.group, row.requests, row.cost) == (NOW, (None, None, None), 1, 0.25)
