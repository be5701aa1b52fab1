"""The console's reads (core/browse.py), shared by the SQLite and PostgreSQL stores.

Batches: one scan of the batches table (tens of thousands of rows at most), sorted
active first with a top-N sort; a model filter looks for one matching ledger row per
batch through the ledger's (batch_id, line) index. Request rows: a range of the
requests table's primary key (batch_pk << 32 | line), so a page costs the same at line
10 as at line 1,000,000.
"""

from __future__ import annotations

from typing import Any

from batchgate.core.browse import BatchSearch, RequestRow
from batchgate.core.states import ACTIVE_STATUSES, RequestState

LINE_BITS = 32

_ACTIVE = ", ".join(sorted(f"'{s.value}'" for s in ACTIVE_STATUSES))

REQUEST_COLUMNS = (
    "id, custom_id, state, attempts, status_code, error_code, error_message, input_tokens, output_tokens, "
    "cost, latency_ms, backend, model, result"
)


def search_batches_sql(q: BatchSearch, p: str, columns: str) -> tuple[str, list[Any]]:
    """`columns` of the matching batches, active first then newest, one more than the limit."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("project_id", q.project_id), ("source", q.source), ("key_id", q.key_id)):
        if value is not None:
            where.append(f"{column} = {p}")
            params.append(value)
    if q.status is not None:
        where.append(f"status = {p}")
        params.append(q.status.value)
    if q.model is not None:
        where.append(
            f"EXISTS (SELECT 1 FROM ledger l WHERE l.batch_id = batches.id AND (l.model = {p} OR l.resolved_model = {p}))"
        )
        params += [q.model, q.model]
    sql = (
        f"SELECT {columns} FROM batches{' WHERE ' + ' AND '.join(where) if where else ''} "
        f"ORDER BY CASE WHEN status IN ({_ACTIVE}) THEN 0 ELSE 1 END, pk DESC LIMIT {p} OFFSET {p}"
    )
    return sql, [*params, q.limit + 1, q.offset]


def request_rows_sql(
    first_id: int, last_id: int, state: RequestState | None, after_line: int | None, limit: int, p: str
) -> tuple[str, list[Any]]:
    """A batch's rows (ids `first_id`..`last_id`) in line order after `after_line`."""
    low = first_id + after_line + 1 if after_line is not None else first_id
    sql = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id BETWEEN {p} AND {p}"
    params: list[Any] = [low, last_id]
    if state is not None:
        sql += f" AND state = {p}"
        params.append(state.value)
    return sql + f" ORDER BY id LIMIT {p}", [*params, limit + 1]


def request_row(row: tuple[Any, ...]) -> RequestRow:
    (rid, custom_id, state, attempts, status_code, error_code, error_message, tokens_in, tokens_out, cost,
     latency_ms, backend, model, body) = row  # fmt: skip
    return RequestRow(
        line=rid & ((1 << LINE_BITS) - 1), custom_id=custom_id, state=RequestState(state), attempts=attempts,
        status_code=status_code, error_code=error_code, error_message=error_message, input_tokens=tokens_in,
        output_tokens=tokens_out, cost=cost, latency_ms=latency_ms, backend=backend, model=model,
        body=bytes(body) if body is not None else None,
    )  # fmt: skip
