"""Migration 0014 backfills the hourly usage rollup from the ledger rows already there,
on SQLite and PostgreSQL: after it, usage read through the rollup equals the ledger's sums."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pgdb import empty_database, migrate
from sqlalchemy import create_engine, text

from batchgate.core.ledger import LedgerQuery, UsageRow, usage_of
from batchgate.core.ports import Store
from batchgate.store import SQLiteStore
from batchgate.store.migrate import sqlalchemy_url
from batchgate.store.postgres import PostgresStore

NOW = 1_800_000_000
ROWS = [
    # kind, project, key, batch, line, model, resolved, backend, in, out, cost, status, error, started
    ("sync", "p", "k1", None, None, "m", "m-1", "local", 3, 5, 0.25, 200, None, NOW + 10.5),
    ("sync", "p", None, None, None, None, None, None, 0, 0, 0.0, 500, "boom", NOW + 3599.9),
    ("batch", "p", "k2", "b1", 1, "m", "m-1", "local", 7, 9, 0.125, 200, None, NOW + 3600.2),
    ("batch", "q", "k2", "b1", 2, "n", "n", "other", 1, 2, 0.5, 400, "bad", NOW + 7300),
]


def _norm(rows: list[UsageRow]) -> list[tuple[object, ...]]:
    return sorted(
        (
            r.bucket,
            tuple(str(g) for g in r.group),
            r.kind,
            r.requests,
            r.input_tokens,
            r.output_tokens,
            round(r.cost, 9),
        )
        for r in rows
    )


def _seed(url: str) -> None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as connection:
            for kind, project, key, batch, line, model, resolved, backend, tin, tout, cost, status, error, at in ROWS:
                connection.execute(
                    text(
                        "INSERT INTO ledger (kind, project_id, key_id, batch_id, line, endpoint, model, "
                        "resolved_model, backend, input_tokens, output_tokens, cost, latency_ms, status_code, "
                        "error_code, started_at, finished_at) VALUES (:kind, :project, :key, :batch, :line, "
                        "'/v1/chat/completions', :model, :resolved, :backend, :tin, :tout, :cost, 100, :status, "
                        ":error, :at, :at)"
                    ),
                    dict(kind=kind, project=project, key=key, batch=batch, line=line, model=model, resolved=resolved,
                         backend=backend, tin=tin, tout=tout, cost=cost, status=status, error=error, at=at),
                )  # fmt: skip
    finally:
        engine.dispose()


def _sqlite(tmp: Path) -> tuple[str, Callable[[], Store]]:
    return f"sqlite:///{tmp / 'm.db'}", lambda: SQLiteStore(tmp / "m.db")


def _postgres(tmp: Path) -> tuple[str, Callable[[], Store]]:
    url = empty_database()
    return url, lambda: PostgresStore(url, pool_size=2, migrate=False)


@pytest.mark.parametrize("make", [_sqlite, _postgres], ids=["sqlite", "postgres"])
def test_migration_backfills_the_rollup_from_the_ledger(make: Callable, tmp_path: Path) -> None:
    url, open_store = make(tmp_path)
    migrate(url, "0013")
    _seed(url)
    migrate(url, "head")
    store = open_store()
    try:
        rows = store.list_ledger(LedgerQuery(limit=100)).data
        assert len(rows) == len(ROWS)
        for group_by in [(), ("key", "model"), ("project", "backend", "endpoint")]:
            for seconds in (3600, 86_400):
                got = store.ledger_usage(LedgerQuery(since=NOW - 3600), group_by, seconds)
                want = usage_of(rows, group_by, seconds)
                assert _norm(got) == _norm(want), group_by
    finally:
        store.close()
