"""PostgreSQL databases for tests: the schema is migrated once per run into a template
database, and each test gets its own database copied from it (CREATE DATABASE ...
TEMPLATE, a file copy: milliseconds, not a migration run).

The server is BATCHGATE_TEST_PG (default: this machine kind's 127.0.0.1:5432, trust
auth, database `test`). Unreachable, the tests that need it skip locally and fail in CI
(CI=true), so a CI run never passes without having run them.
"""

from __future__ import annotations

import atexit
import os
import secrets
from urllib.parse import urlsplit

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from batchgate.store.migrate import MIGRATIONS, sqlalchemy_url, upgrade_postgres

ADMIN_URL = os.environ.get("BATCHGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_PREFIX = f"bgtest_{os.getpid()}_"
_TEMPLATE = f"{_PREFIX}template"
_state: dict[str, object] = {}


def _url(database: str) -> str:
    return urlsplit(ADMIN_URL)._replace(path=f"/{database}").geturl()


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _unavailable(exc: Exception | None) -> None:
    if exc is not None:  # remembered: the next tests skip (or fail) without waiting to connect again
        _state["unreachable"] = f"PostgreSQL at {ADMIN_URL} is unreachable ({exc.__class__.__name__}: {exc})".strip()
    reason = str(_state["unreachable"])
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


def _template() -> str:
    if "unreachable" in _state:
        _unavailable(None)
    if "template" not in _state:
        try:
            _drop_stale()
        except psycopg.OperationalError as exc:
            _unavailable(exc)
        _admin(f"CREATE DATABASE {_TEMPLATE}")
        atexit.register(_drop_all)
        upgrade_postgres(_url(_TEMPLATE))
        _state["template"] = _TEMPLATE
    return _TEMPLATE


def new_database() -> str:
    """The URL of a fresh, migrated database of its own (dropped when the run ends)."""
    template = _template()
    name = f"{_PREFIX}{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    return _url(name)


def empty_database() -> str:
    """The URL of a new database with no schema (for migration tests; dropped when the run ends)."""
    _template()  # skips, or fails in CI, when there is no PostgreSQL
    name = f"{_PREFIX}e{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name}")
    return _url(name)


def migrate(url: str, target: str, down: bool = False) -> None:
    """Run the migrations of the database at `url` (SQLite or PostgreSQL) up, or down, to `target`."""
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, target)
    finally:
        engine.dispose()


def _drop_stale() -> None:
    """Drop the databases of earlier runs that were killed before they could drop them."""
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bgtest\\_%'")]
        for name in names:
            pid = int(name.split("_")[1])
            if pid == os.getpid() or not _alive(pid):
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _drop_all() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (_PREFIX + "%",))]
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
