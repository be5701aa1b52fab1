"""Opening a store whose database is at the head revision takes no migration machinery
(alembic and SQLAlchemy stay unimported: ~40 MB in every process); one behind is upgraded."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from pgdb import new_database

from batchgate.store import migrate

OPEN_AND_LIST_MODULES = """
import sys
from pathlib import Path
from batchgate.store.{module} import {store}
{store}({arg})
print(sorted(m for m in ("alembic", "sqlalchemy") if m in sys.modules))
"""


def opened_with(module: str, store: str, arg: str) -> str:
    code = OPEN_AND_LIST_MODULES.format(module=module, store=store, arg=arg)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_head_is_the_newest_migration_file_as_alembic_sees_it() -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == migrate.HEAD


def test_a_sqlite_database_is_migrated_once_and_then_opened_without_alembic(tmp_path: Path) -> None:
    db = tmp_path / "batchgate.db"
    assert opened_with("sqlite", "SQLiteStore", f"Path({str(db)!r})") == "['alembic', 'sqlalchemy']"
    assert opened_with("sqlite", "SQLiteStore", f"Path({str(db)!r})") == "[]"


def test_a_sqlite_database_behind_the_head_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "batchgate.db"
    migrate.upgrade_sqlite(db)
    with sqlite3.connect(db) as conn:  # as if written by the release before the newest migration
        conn.execute("DROP INDEX responses_by_created_at")
        conn.execute("UPDATE alembic_version SET version_num = '0014'")
    assert opened_with("sqlite", "SQLiteStore", f"Path({str(db)!r})") == "['alembic', 'sqlalchemy']"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (migrate.HEAD,)
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'responses_by_created_at'").fetchone()


def test_a_postgres_database_at_the_head_is_opened_without_alembic() -> None:
    url = new_database()  # a copy of the migrated template
    assert opened_with("postgres", "PostgresStore", repr(url)) == "[]"


SERVE_STARTUP = """
import sys
from pathlib import Path
from batchgate.app import build_services, upgrade_database_apart
from batchgate.settings import Settings
settings = Settings(home=Path({home!r}), backend="scripted")
upgrade_database_apart(settings)  # what `batchgate serve` and `batchgate worker` do first
build_services(settings).close()
print(sorted(m for m in ("alembic", "sqlalchemy", "psycopg") if m in sys.modules))
"""


def test_a_server_on_a_new_data_dir_migrates_in_a_child_and_never_loads_alembic(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    code = SERVE_STARTUP.format(home=str(home))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"  # and psycopg neither: the store is SQLite
    with sqlite3.connect(home / "batchgate.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (migrate.HEAD,)


def test_postgres_keeps_line_index_chunks_uncompressed() -> None:
    import psycopg

    with psycopg.connect(new_database()) as conn:
        row = conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'line_chunks'::regclass AND attname = 'data'"
        ).fetchone()
    assert row == ("e",)  # EXTERNAL: out of line, never pglz-compressed (migration 0016)
