"""The SQL of budgets (core/budgets.py), shared by the SQLite and PostgreSQL stores (they
differ only in how a parameter is written: `?` or `%s`)."""

from __future__ import annotations

from typing import Any

from batchgate.core.budgets import BUDGET_PAUSED_STATUSES

_STATUSES = ", ".join(sorted(f"'{s.value}'" for s in BUDGET_PAUSED_STATUSES))


def spend_sql(key_id: str, since: float | None, after: int, upto: int | None, p: str) -> tuple[str, list[Any]]:
    """The cost of the key's rows with after < id <= upto (None: no bound) that started at
    or after `since` (None: ever): index-only on `ledger_by_key` (key_id, pk, started_at,
    cost), a range of it when `after` is recent."""
    sql, params = f"SELECT coalesce(sum(cost), 0) FROM ledger WHERE key_id = {p} AND pk > {p}", [key_id, after]
    if upto is not None:
        sql += f" AND pk <= {p}"
        params.append(upto)
    if since is not None:
        sql += f" AND started_at >= {p}"
        params.append(since)
    return sql, params


def mismatched_sql(key_ids: list[str], p: str) -> tuple[str, list[Any]]:
    """Batches whose budget pause is not what it should be: validating or running batches
    of spent keys that are not paused, and paused batches that are neither any more or
    whose key is no longer spent. Rows: (id, key_id, paused now?)."""
    runnable = f"status IN ({_STATUSES})"
    if key_ids:
        spent = f"key_id IN ({', '.join([p] * len(key_ids))})"
        sql = (
            "SELECT id, key_id, budget_paused_at IS NOT NULL FROM batches "
            f"WHERE ({runnable} AND {spent} AND budget_paused_at IS NULL) "
            f"OR (budget_paused_at IS NOT NULL AND NOT ({runnable} AND {spent}))"
        )
        return sql, [*key_ids, *key_ids]
    return "SELECT id, key_id, budget_paused_at IS NOT NULL FROM batches WHERE budget_paused_at IS NOT NULL", []


def pause_sql(p: str) -> str:
    return (
        f"UPDATE batches SET budget_paused_at = {p} WHERE id = {p} AND budget_paused_at IS NULL "
        f"AND status IN ({_STATUSES})"
    )


def resume_sql(p: str) -> str:
    return f"UPDATE batches SET budget_paused_at = NULL WHERE id = {p}"


def split(rows: list[tuple[Any, ...]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(batches to pause, batches to resume), each as (batch id, key id)."""
    pause = [(r[0], r[1]) for r in rows if not r[2]]
    resume = [(r[0], r[1] or "") for r in rows if r[2]]
    return pause, resume
