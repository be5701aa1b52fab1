"""Migration 0015 indexes stored responses by `created_at`, which the retention sweep
deletes by (oldest first, a chunk at a time), on SQLite and PostgreSQL; downgraded, the
index is gone; the sweep deletes the expired responses with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pgdb import empty_database, migrate
from sqlalchemy import create_engine, inspect

from batchgate.core.models import StoredResponse
from batchgate.core.ports import Store
from batchgate.store import SQLiteStore
from batchgate.store.migrate import sqlalchemy_url
from batchgate.store.postgres import PostgresStore


def _migrate(url: str, target: str, down: bool = False) -> set[str]:
    """Migrate to `target`; the names of the responses table's indexes then."""
    migrate(url, target, down)
    engine = create_engine(sqlalchemy_url(url))
    try:
        return {str(index["name"]) for index in inspect(engine).get_indexes("responses")}
    finally:
        engine.dispose()


def _sqlite(tmp: Path) -> tuple[str, Callable[[], Store]]:
    return f"sqlite:///{tmp / 'r.db'}", lambda: SQLiteStore(tmp / "r.db")


def _postgres(tmp: Path) -> tuple[str, Callable[[], Store]]:
    url = empty_database()
    return url, lambda: PostgresStore(url, pool_size=2, migrate=False)


@pytest.mark.parametrize("make", [_sqlite, _postgres], ids=["sqlite", "postgres"])
def test_stored_responses_are_indexed_by_creation_for_the_sweep(make: Callable, tmp_path: Path) -> None:
    url, open_store = make(tmp_path)
    assert "responses_by_created_at" not in _migrate(url, "0014")
    assert "responses_by_created_at" in _migrate(url, "head")
    store = open_store()
    try:
        for i, created_at in enumerate((100, 200, 300)):
            store.add_response(StoredResponse(f"resp_{i}", "p", created_at, {"id": f"resp_{i}"}, [], []))
        assert store.delete_expired_responses(250, 10) == 2
        assert store.get_response("resp_2", "p") is not None and store.get_response("resp_0", "p") is None
    finally:
        store.close()
    assert "responses_by_created_at" not in _migrate(url, "0014", down=True)
