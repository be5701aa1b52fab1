"""PostgreSQL operations: `batchgate db upgrade` on an empty database, and the NOTIFY
wake-ups that let idle workers on other hosts start on new work at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from pgdb import ADMIN_URL, new_database

from batchgate.core.models import BatchRecord, BatchStatus, FileRecord
from batchgate.store.postgres import PostgresStore, PostgresWakeups, redacted

NOW = 1_800_000_000


def empty_database() -> str:
    """A database without the schema (the template's copy, emptied)."""
    url = new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return url


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_db_upgrade_migrates_an_empty_database_and_again_is_a_no_op(tmp_path: Path) -> None:
    url = empty_database()
    assert tables(url) == set()
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "batchgate", "db", "upgrade", "--database-url", url, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "database schema up to date" in out.stderr
    assert {"batches", "requests", "files", "workers", "alembic_version", "responses"} <= tables(url)
    assert not (tmp_path / "batchgate.db").exists(), "no SQLite database beside it"


def test_db_upgrade_on_the_data_dir_without_a_database_url(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "batchgate", "db", "upgrade", "--data-dir", str(tmp_path)], check=True)
    assert (tmp_path / "batchgate.db").exists()


def test_passwords_are_not_shown() -> None:
    assert redacted("postgresql://bg:s3cret@db:5432/bg") == "postgresql://bg:***@db:5432/bg"
    assert redacted(ADMIN_URL) == ADMIN_URL
    assert urlsplit(redacted("postgresql://bg:s3cret@db/bg")).password == "***"


def test_a_new_batch_wakes_listeners_and_a_read_does_not() -> None:
    url = new_database()
    store = PostgresStore(url, pool_size=2, migrate=False)
    woken = threading.Event()
    wakeups = PostgresWakeups(url, woken.set)
    wakeups.start()
    try:
        assert woken.wait(10), "woken once on connecting (work may have appeared before)"
        woken.clear()
        store.add_file(FileRecord("file-1", "proj", "batch", "in.jsonl", 10, NOW))
        store.list_workers()
        assert not woken.wait(1.5), "a file or a read is no work"
        batch = BatchRecord(
            id="batch_1", project_id="proj", endpoint="/v1/chat/completions", input_file_id="file-1",
            completion_window="24h", status=BatchStatus.VALIDATING, created_at=NOW, expires_at=NOW + 86_400,
        )  # fmt: skip
        store.add_batch(batch)
        assert woken.wait(5), "a new batch (its validation job) wakes the workers"
    finally:
        wakeups.stop()
        store.close()
