"""Schema migrations with alembic, run at startup under a lock so that a server and a
worker starting together never race on the schema: a file lock next to a SQLite
database, an advisory lock on PostgreSQL (held by the migrating transaction)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

MIGRATIONS = Path(__file__).parent / "migrations"


# any constant shared by every batchgate process: the key of the migration advisory lock
_PG_MIGRATION_LOCK = 0x62617463_68676174  # "batchgat"


def upgrade_sqlite(db_path: Path) -> None:
    lock_path = db_path.with_suffix(".migrate.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _upgrade(f"sqlite:///{db_path}")


def upgrade_postgres(url: str) -> None:
    """Bring a PostgreSQL database (a `postgresql://` URL) to the head revision."""
    _upgrade(sqlalchemy_url(url), lock_key=_PG_MIGRATION_LOCK)


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else url


def _upgrade(url: str, lock_key: int | None = None) -> None:
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
