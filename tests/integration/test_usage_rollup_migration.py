"""Migration 0014 backfills the hourly usage rollup from the ledger rows already there,
on SQLite and PostgreSQL: after it, usage read through the rollup equals the ledger's sums."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from pgdb import _PREFIX, _admin, _template, _url
from sqlalchemy import create_engine, text

from batchgate.core.ledger import LedgerQuery, UsageRow, usage_of
from batchgate.core.ports import Store
from batchgate.store import SQLiteStore
from batchgate.store.migrate import MIGRATIONS, sqlalchemy_url
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


def _upgrade(url: str, target: str) -> None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, target)
    finally:
        engine.dispose()


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
    path = tmp / "m.db"
    return f"sqlite:///{path}", lambda: SQLiteStore(path)


def _postgres(tmp: Path) -> tuple[str, Callable[[], Store]]:
    _template()  # skips when there is no PostgreSQL
    name = f"{_PREFIX}m{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name}")
    url = _url(name)
    return url, lambda: PostgresStore(url, pool_size=2, migrate=False)


@pytest.mark.parametrize("make", [_sqlite, _postgres], ids=["sqlite", "postgres"])
def test_migration_backfills_the_rollup_from_the_ledger(make: Callable, tmp_path: Path) -> None:
    url, open_store = make(tmp_path)
    _upgrade(url, "0013")
    _seed(url)
    _upgrade(url, "head")
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
