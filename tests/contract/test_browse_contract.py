"""The Store contract for the console's reads (core/browse.py), on every store: batches
of one project or all, filtered, active first; a batch's request rows in line order,
filtered by state, paged by line."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract import test_store_contract as suite
from contract.test_ledger_contract import keyed_batch
from contract.test_store_contract import NOW, A, B, a_batch, failed, succeeded, validated

from batchgate.core.browse import BatchSearch
from batchgate.core.models import BatchStatus, RequestState
from batchgate.core.ports import Store

store = suite.store  # the fixture: each test runs on every store


def ids(store: Store, **query: object) -> list[str]:
    return [b.id for b in store.search_batches(BatchSearch(**query)).data]  # type: ignore[arg-type]


def test_batches_list_active_first_then_newest(store: Store) -> None:
    ended = a_batch(store, A)
    job = store.claim_batch_job("v", NOW)
    assert job is not None and job.batch.id == ended.id
    assert store.fail_batch(ended.id, [], NOW, "v")
    older = a_batch(store, A)
    theirs = a_batch(store, B, source="operation")
    newer = a_batch(store, A)
    assert ids(store, limit=10) == [newer.id, theirs.id, older.id, ended.id]
    assert ids(store, project_id=A) == [newer.id, older.id, ended.id]
    assert ids(store, source="operation") == [theirs.id]
    assert ids(store, status=BatchStatus.FAILED) == [ended.id]


def test_batches_page_by_offset(store: Store) -> None:
    made = [a_batch(store, A).id for _ in range(5)]
    first = store.search_batches(BatchSearch(project_id=A, limit=2))
    second = store.search_batches(BatchSearch(project_id=A, offset=2, limit=2))
    last = store.search_batches(BatchSearch(project_id=A, offset=4, limit=2))
    assert (first.has_more, second.has_more, last.has_more) == (True, True, False)
    assert [b.id for b in first.data + second.data + last.data] == made[::-1]


def test_batches_filter_by_key_and_by_a_metered_model(store: Store) -> None:
    keyed = keyed_batch(store, 2, "key_7")
    a_batch(store, A)
    store.claim_requests("w", 2, NOW)
    store.record_results("w", [replace(succeeded(keyed.id, 1), requested_model="m-asked", model="m-real")], NOW)
    assert ids(store, key_id="key_7") == [keyed.id]
    assert ids(store, model="m-asked") == [keyed.id]
    assert ids(store, model="m-real") == [keyed.id]
    assert ids(store, model="nope") == []


def test_request_rows_in_line_order_by_state_and_in_pages(store: Store) -> None:
    b = validated(store, 5)
    store.claim_requests("w", 4, NOW)  # line 5 is never claimed: it has no row
    store.record_results("w", [succeeded(b.id, 1), failed(b.id, 2), succeeded(b.id, 4)], NOW)
    page = store.list_request_rows(b.id, None, None, 10)
    assert [(r.line, r.state) for r in page.data] == [
        (1, RequestState.SUCCEEDED),
        (2, RequestState.FAILED),
        (3, RequestState.RUNNING),
        (4, RequestState.SUCCEEDED),
    ]
    first = page.data[0]
    assert (first.custom_id, first.status_code, first.input_tokens, first.output_tokens, first.cost) == (
        "c1", 200, 3, 6, 0.5
    )  # fmt: skip
    assert first.body == b'{"ok": 1}'
    assert (page.data[1].error_code, page.data[1].error_message) == ("boom", "no")
    ok = store.list_request_rows(b.id, RequestState.SUCCEEDED, None, 1)
    assert ([r.line for r in ok.data], ok.has_more) == ([1], True)
    rest = store.list_request_rows(b.id, RequestState.SUCCEEDED, 1, 1)
    assert ([r.line for r in rest.data], rest.has_more) == ([4], False)
    with pytest.raises(KeyError):
        store.list_request_rows("batch_nope", None, None, 10)
