"""The ledger's hourly rollup (core/rollup.py) in SQL, shared by the SQLite and PostgreSQL
stores (they differ in how a parameter is written, `?` or `%s`, and in how whole seconds
of started_at are taken). Every ledger insert adds its rows' sums here in its own
transaction: the rows are summed in Python first (a flush of batch lines is a handful of
upserts, usually one), then `INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from batchgate.core import rollup
from batchgate.core.ledger import LedgerEntry, LedgerQuery, UsageRow
from batchgate.store import ledger_sql

KEYS = "hour, project_id, key_id, model, resolved_model, backend, endpoint, kind"
SUMS = ("requests", "input_tokens", "output_tokens", "cost", "errors")
_UPDATE = f" ON CONFLICT ({KEYS}) DO UPDATE SET " + ", ".join(f"{c} = usage_rollup.{c} + excluded.{c}" for c in SUMS)


def upsert_sql(p: str) -> str:
    return f"INSERT INTO usage_rollup ({KEYS}, {', '.join(SUMS)}) VALUES ({', '.join([p] * 13)}){_UPDATE}"


def add_entries(cur: Any, p: str, entries: Sequence[LedgerEntry]) -> None:
    """The sums of ledger rows written whole (synchronous requests)."""
    sums: dict[rollup.RollupKey, rollup.Sums] = {}
    for e in entries:
        rollup.add(sums, e)
    if sums:
        cur.executemany(
            upsert_sql(p), [(*k, *(int(v) for v in s[:3]), s[3], int(s[4])) for k, s in sorted(sums.items())]
        )


def add_batch_lines(cur: Any, p: str, rows: Sequence[Sequence[Any]]) -> None:
    """The sums of batch lines' ledger rows, given as `ledger_sql.batch_params` tuples
    (line, model, resolved_model, backend, input_tokens, output_tokens, cost, latency_ms,
    status_code, error_code, started_at, finished_at, batch_pk). Their batches' project,
    key and endpoint are read first (one query), so the rows are summed per whole rollup
    row and upserted in its key order: concurrent flushes lock rollup rows in one order
    (no deadlock on PostgreSQL), and no statement touches a row twice."""
    if not rows:
        return
    pks = sorted({r[12] for r in rows})
    found = cur.execute(
        f"SELECT pk, project_id, coalesce(key_id, ''), endpoint FROM batches WHERE pk IN ({', '.join([p] * len(pks))})",
        pks,
    ).fetchall()
    batches = {pk: (project, key, endpoint) for pk, project, key, endpoint in found}
    sums: dict[rollup.RollupKey, rollup.Sums] = {}
    for _line, model, resolved, backend, tokens_in, tokens_out, cost, _, status, error, started, _, pk in rows:
        if (batch := batches.get(pk)) is None:
            continue  # as the ledger's INSERT ... SELECT FROM batches: no batch, no row
        project, key, endpoint = batch
        k = (rollup.hour_of(started), project, key, model or "", resolved or "", backend or "", endpoint, "batch")
        s = sums.setdefault(k, [0, 0, 0, 0.0, 0])
        s[0] += 1
        s[1] += tokens_in
        s[2] += tokens_out
        s[3] += cost
        s[4] += rollup.is_error(status, error)
    if sums:
        cur.executemany(
            upsert_sql(p), [(*k, *(int(v) for v in s[:3]), s[3], int(s[4])) for k, s in sorted(sums.items())]
        )


def new_lines(cur: Any, p: str, batch_id: str, rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """Of imported lines' `batch_params` rows, those not metered yet (the ledger keeps a
    line's first row: ON CONFLICT DO NOTHING), each line once."""
    if not rows:
        return []
    lines = [r[0] for r in rows]
    metered = {
        r[0]
        for r in cur.execute(
            f"SELECT line FROM ledger WHERE batch_id = {p} AND line BETWEEN {p} AND {p}",
            (batch_id, min(lines), max(lines)),
        ).fetchall()
    }
    fresh: dict[int, Sequence[Any]] = {}
    for r in rows:
        if r[0] not in metered:
            fresh.setdefault(r[0], r)
    return list(fresh.values())


def usage_sql(
    q: LedgerQuery, group_by: tuple[str, ...], bucket_seconds: int, lo: int | None, hi: int | None, p: str
) -> tuple[str, list[Any]]:
    """The rollup's sums per bucket, group and kind within hours lo <= hour < hi."""
    where: list[str] = []
    params: list[Any] = []
    for name in ("project_id", "key_id", "backend", "endpoint"):
        if (value := getattr(q, name)) is not None:
            where.append(f"{name} = {p}")
            params.append(value)
    if q.model is not None:
        where.append(f"(model = {p} OR resolved_model = {p})")
        params += [q.model, q.model]
    for clause, value in (("hour >= ", lo), ("hour < ", hi)):
        if value is not None:
            where.append(clause + p)
            params.append(value)
    columns = [rollup.ROLLUP_GROUPS[g] for g in group_by]
    seconds = int(bucket_seconds)
    sql = (
        f"SELECT (hour / {seconds}) * {seconds} AS bucket, {''.join(c + ', ' for c in columns)}kind, "
        "sum(requests), sum(input_tokens), sum(output_tokens), sum(cost) FROM usage_rollup"
        f"{' WHERE ' + ' AND '.join(where) if where else ''} GROUP BY {', '.join(['bucket', *columns, 'kind'])}"
    )
    return sql, params


def _row(row: Sequence[Any], groups: int) -> UsageRow:
    r = ledger_sql.usage_row(tuple(row), groups)
    r.group = tuple(g or None for g in r.group)
    return r


def usage(
    run: Callable[[str, list[Any]], Sequence[Sequence[Any]]],
    q: LedgerQuery,
    group_by: tuple[str, ...],
    bucket_seconds: int,
    p: str,
    seconds: str,
) -> list[UsageRow]:
    """`Store.ledger_usage`: from the rollup (and the ledger's rows of partial hours at the
    range's edges) when it can answer, else from the ledger. `run(sql, params)`: the rows."""
    plan = rollup.plan(q, group_by, bucket_seconds)
    if plan is None:
        sql, params = ledger_sql.usage_sql(q, group_by, bucket_seconds, p, seconds)
        return [ledger_sql.usage_row(tuple(r), len(group_by)) for r in run(sql, params)]
    sql, params = usage_sql(q, group_by, bucket_seconds, plan.lo, plan.hi, p)
    parts = [[_row(r, len(group_by)) for r in run(sql, params)]]
    for edge in plan.edges:
        sql, params = ledger_sql.usage_sql(edge, group_by, bucket_seconds, p, seconds)
        parts.append([ledger_sql.usage_row(tuple(r), len(group_by)) for r in run(sql, params)])
    return rollup.merge(parts)


def backfill_sql(dialect: str) -> str:
    """The rollup of every ledger row (the migration that creates it)."""
    seconds = "CAST(floor(started_at) AS BIGINT)" if dialect == "postgresql" else "CAST(started_at AS INTEGER)"
    error = "CASE WHEN error_code IS NOT NULL OR status_code >= 400 THEN 1 ELSE 0 END"
    return (
        f"INSERT INTO usage_rollup ({KEYS}, {', '.join(SUMS)}) "
        f"SELECT ({seconds} / 3600) * 3600 AS hour, project_id, coalesce(key_id, '') AS key_id, "
        "coalesce(model, '') AS model, coalesce(resolved_model, '') AS resolved_model, "
        "coalesce(backend, '') AS backend, endpoint, kind, count(*), coalesce(sum(input_tokens), 0), "
        f"coalesce(sum(output_tokens), 0), coalesce(sum(cost), 0), coalesce(sum({error}), 0) "
        "FROM ledger GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )
