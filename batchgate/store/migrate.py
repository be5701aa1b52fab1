"""Schema migrations with alembic, run at startup under a file lock so that a server and
a worker starting together on the same data dir never race on the schema."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def upgrade_sqlite(db_path: Path) -> None:
    lock_path = db_path.with_suffix(".migrate.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine = create_engine(f"sqlite:///{db_path}")
        try:
            with engine.begin() as connection:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        finally:
            engine.dispose()
