"""The ledger's SQL, shared by the SQLite and PostgreSQL stores (they differ only in how
a parameter is written: `?` or `%s`)."""

from __future__ import annotations

from typing import Any

from batchgate.core.ledger import BATCH, USAGE_GROUPS, LedgerEntry, LedgerQuery, UsageRow, error_code
from batchgate.core.models import RequestResult

COLUMNS = (
    "kind, project_id, key_id, batch_id, line, endpoint, model, resolved_model, backend, input_tokens, "
    "output_tokens, cost, latency_ms, status_code, error_code, started_at, finished_at"
)


def insert_sql(p: str) -> str:
    return f"INSERT INTO ledger ({COLUMNS}) VALUES ({', '.join([p] * 17)})"


def entry_params(e: LedgerEntry) -> tuple[Any, ...]:
    return (
        e.kind, e.project_id, e.key_id, e.batch_id, e.line, e.endpoint, e.model, e.resolved_model, e.backend,
        e.input_tokens, e.output_tokens, e.cost, e.latency_ms, e.status_code, e.error_code, e.started_at,
        e.finished_at,
    )  # fmt: skip


def batch_insert_sql(p: str) -> str:
    """One batch line's row, its project, key and endpoint read from its batch (by pk)."""
    return (
        f"INSERT INTO ledger ({COLUMNS}) SELECT '{BATCH}', project_id, key_id, id, {p}, endpoint, "
        f"{', '.join([p] * 11)} FROM batches WHERE pk = {p}"
    )


# the columns of `batch_params` rows, in their order
LINE_COLUMNS = (
    "line, model, resolved_model, backend, input_tokens, output_tokens, cost, latency_ms, status_code, "
    "error_code, started_at, finished_at, batch_pk"
)


def lines_insert_sql(lines: str) -> str:
    """Many batch lines' rows in one statement: `lines` is a row source named `v` with
    LINE_COLUMNS (SQLite: a VALUES list, PostgreSQL: unnest of arrays); each line's
    project, key and endpoint are read from its batch."""
    return (
        f"INSERT INTO ledger ({COLUMNS}) SELECT '{BATCH}', b.project_id, b.key_id, b.id, v.line, b.endpoint, "
        "v.model, v.resolved_model, v.backend, v.input_tokens, v.output_tokens, v.cost, v.latency_ms, "
        f"v.status_code, v.error_code, v.started_at, v.finished_at FROM {lines} JOIN batches AS b ON b.pk = v.batch_pk"
    )


def imported_insert_sql(p: str) -> str:
    """As `batch_insert_sql`, for a line an upstream's Batch API answered: its results may
    be imported again (after a crash), and a line already metered stays as it is."""
    return batch_insert_sql(p) + " ON CONFLICT (batch_id, line) WHERE batch_id IS NOT NULL DO NOTHING"


def batch_params(r: RequestResult, batch_pk: int, now: int) -> tuple[Any, ...]:
    return (
        r.line, r.requested_model, r.model, r.backend, r.input_tokens, r.output_tokens, r.cost, r.latency_ms,
        r.status_code, error_code(r), now - r.latency_ms / 1000, now, batch_pk,
    )  # fmt: skip


_FILTERS = ("project_id", "key_id", "batch_id", "backend", "endpoint", "status_code")


def where_sql(q: LedgerQuery, p: str) -> tuple[str, list[Any]]:
    """The query's filters as a WHERE clause ("" for none) and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    for name in _FILTERS:
        if (value := getattr(q, name)) is not None:
            where.append(f"{name} = {p}")
            params.append(value)
    if q.model is not None:
        where.append(f"(model = {p} OR resolved_model = {p})")
        params += [q.model, q.model]
    for clause, value in (("started_at >= ", q.since), ("started_at < ", q.until), ("pk < ", q.before)):
        if value is not None:
            where.append(clause + p)
            params.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def select_sql(q: LedgerQuery, p: str) -> tuple[str, list[Any]]:
    """The query's rows, newest first, one more than `limit` (to tell if there are more)."""
    where, params = where_sql(q, p)
    return f"SELECT pk, {COLUMNS} FROM ledger{where} ORDER BY pk DESC LIMIT {p}", [*params, q.limit + 1]


def usage_sql(
    q: LedgerQuery, group_by: tuple[str, ...], bucket_seconds: int, p: str, seconds: str
) -> tuple[str, list[Any]]:
    """Sums per bucket, group and kind. `seconds`: the dialect's whole seconds of started_at
    (truncated, not rounded), so both stores put a row in the same bucket."""
    where, params = where_sql(q, p)
    columns = [USAGE_GROUPS[g] for g in group_by]
    keys = ", ".join(["bucket", *columns, "kind"])
    sql = (
        f"SELECT ({seconds} / {int(bucket_seconds)}) * {int(bucket_seconds)} AS bucket, "
        f"{''.join(c + ', ' for c in columns)}kind, count(*), sum(input_tokens), sum(output_tokens), sum(cost) "
        f"FROM ledger{where} GROUP BY {keys} ORDER BY {keys}"
    )
    return sql, params


def usage_row(row: tuple[Any, ...], groups: int) -> UsageRow:
    bucket, *rest = row
    group, (kind, requests, tokens_in, tokens_out, cost) = tuple(rest[:groups]), rest[groups:]
    return UsageRow(int(bucket), group, kind, int(requests), int(tokens_in), int(tokens_out), float(cost))


def entry(row: tuple[Any, ...]) -> LedgerEntry:
    (pk, kind, project_id, key_id, batch_id, line, endpoint, model, resolved_model, backend, tokens_in,
     tokens_out, cost, latency_ms, status_code, error_code_, started_at, finished_at) = row  # fmt: skip
    return LedgerEntry(
        kind=kind, project_id=project_id, endpoint=endpoint, started_at=started_at, finished_at=finished_at,
        key_id=key_id, batch_id=batch_id, line=line, model=model, resolved_model=resolved_model, backend=backend,
        input_tokens=tokens_in, output_tokens=tokens_out, cost=cost, latency_ms=latency_ms,
        status_code=status_code, error_code=error_code_, id=pk,
    )  # fmt: skip
