"""The rate limiter's SQL (core/ratelimit.py), shared by the SQLite and PostgreSQL
stores: they differ in how a parameter is written (`?` or `%s`) and in how a step is
serialised with the key's other steps (SQLite: the write lock `BEGIN IMMEDIATE` takes;
PostgreSQL: a transaction-scoped advisory lock on the key, `LOCK_KEY_SQL`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchgate.core.ports import LimiterWrite

# a namespace for the advisory locks of rate-limit steps, apart from the migration lock
_PG_LOCK_SPACE = 0x726C  # "rl"
LOCK_KEY_SQL = f"SELECT pg_advisory_xact_lock({_PG_LOCK_SPACE}, hashtext(%s))"

Step = Callable[[dict[tuple[str, int], tuple[float, float]], int], LimiterWrite]


def run_step(db: Any, p: str, key_id: str, now: float, count_running: bool, step: Step) -> None:
    """Read, step and write inside the caller's transaction; `db` is a sqlite3 connection
    or a psycopg cursor."""
    rows = db.execute(f"SELECT kind, window_s, level, updated_at FROM rate_limit_levels WHERE key_id = {p}", (key_id,))
    levels = {(kind, window_s): (level, updated_at) for kind, window_s, level, updated_at in rows.fetchall()}
    running = 0
    if count_running:
        running = db.execute(
            f"SELECT COUNT(*) FROM rate_limit_leases WHERE key_id = {p} AND expires_at > {p}", (key_id, now)
        ).fetchone()[0]
    write = step(levels, running)
    if write.levels:
        # one statement for all the key's limits, not one per limit: each statement step
        # gives up the GIL and waits to take it back while another thread computes
        row = f"({p}, {p}, {p}, {p}, {p})"
        db.execute(
            "INSERT INTO rate_limit_levels (key_id, kind, window_s, level, updated_at) "
            f"VALUES {', '.join([row] * len(write.levels))} ON CONFLICT (key_id, kind, window_s) "
            "DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at",
            [v for (kind, window_s), (level, at) in write.levels.items() for v in (key_id, kind, window_s, level, at)],
        )
    if write.drop_lease is not None:
        db.execute(f"DELETE FROM rate_limit_leases WHERE id = {p}", (write.drop_lease,))
    if write.add_lease is not None:
        db.execute(f"DELETE FROM rate_limit_leases WHERE key_id = {p} AND expires_at <= {p}", (key_id, now))
        db.execute(
            f"INSERT INTO rate_limit_leases (id, key_id, expires_at) VALUES ({p}, {p}, {p})",
            (write.add_lease[0], key_id, write.add_lease[1]),
        )


def set_pacing_sql(p: str) -> str:
    return (
        f"INSERT INTO batch_pacing (batch_id, until, note) VALUES ({p}, {p}, {p}) "
        "ON CONFLICT (batch_id) DO UPDATE SET until = excluded.until, note = excluded.note"
    )


def pacing_sql(p: str, count: int) -> str:
    return f"SELECT batch_id, until, note FROM batch_pacing WHERE until IS NOT NULL AND batch_id IN ({', '.join([p] * count)})"
