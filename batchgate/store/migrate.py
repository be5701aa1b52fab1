"""Schema migrations with alembic, run at startup under a lock so that a server and a
worker starting together never race on the schema: a file lock next to a SQLite
database, an advisory lock on PostgreSQL (held by the migrating transaction).

A database already at the head revision is recognised with the database's own driver,
without importing alembic and SQLAlchemy: together they are ~40 MB of resident memory in
every process that opens a store (the server, its job child, each worker), for a
schema that only changes when batchgate is upgraded."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from pathlib import Path

from batchgate.store.private import private_file

MIGRATIONS = Path(__file__).parent / "migrations"
# revisions are named by their file's 4-digit prefix (0001_initial.py is revision "0001"),
# so the newest file is the head; a test checks this against alembic's own view
HEAD = max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


# any constant shared by every batchgate process: the key of the migration advisory lock
_PG_MIGRATION_LOCK = 0x62617463_68676174  # "batchgat"


def upgrade_sqlite(db_path: Path) -> None:
    if _sqlite_revision(db_path) == HEAD:
        return
    lock_path = private_file(db_path.with_suffix(".migrate.lock"))
    with open(lock_path, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _upgrade(f"sqlite:///{db_path}")


def upgrade_postgres(url: str) -> None:
    """Bring a PostgreSQL database (a `postgresql://` URL) to the head revision."""
    if _postgres_revision(url) == HEAD:
        return
    _upgrade(sqlalchemy_url(url), lock_key=_PG_MIGRATION_LOCK)


def is_at_head(database: Path | str) -> bool:
    """Whether the database (a SQLite file's path, or a `postgresql://` URL) is at the
    head revision; read with its own driver."""
    revision = _sqlite_revision(database) if isinstance(database, Path) else _postgres_revision(database)
    return revision == HEAD


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else url


def _sqlite_revision(db_path: Path) -> str | None:
    """The database's alembic revision; None where it has none yet (or no file)."""
    if not db_path.exists():
        return None
    with contextlib.closing(sqlite3.connect(db_path)) as conn, contextlib.suppress(sqlite3.Error):
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None
    return None


def _postgres_revision(url: str) -> str | None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, contextlib.suppress(psycopg.errors.UndefinedTable):
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None
    return None


def _upgrade(url: str, lock_key: int | None = None) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if lock_key is not None:
                # PostgreSQL's DDL is transactional: the lock is held until the migrations commit
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
