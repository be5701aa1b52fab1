"""Pausing, resuming and linking retried batches: SQL shared by the SQLite and PostgreSQL
stores (`p` is how a parameter is written; `lock` how a row is locked for an update)."""

from __future__ import annotations

from typing import Any

import orjson

from batchgate.core.states import PAUSABLE_STATUSES


def _pausable() -> str:
    return "status IN ({})".format(", ".join(sorted(f"'{s.value}'" for s in PAUSABLE_STATUSES)))


def pause_sql(p: str) -> str:
    """Set `paused_at` of a batch that may be paused and is not."""
    return f"UPDATE batches SET paused_at = {p} WHERE id = {p} AND paused_at IS NULL AND {_pausable()}"


def resume_sql(p: str) -> str:
    """Clear `paused_at` of a paused batch."""
    return f"UPDATE batches SET paused_at = NULL WHERE id = {p} AND paused_at IS NOT NULL AND {_pausable()}"


# the condition of a batch whose lines workers may claim, beside its status
NOT_PAUSED = "paused_at IS NULL"


def link_retry(db: Any, p: str, lock: str, batch_id: str, retry_id: str) -> bool:
    """Record `retried_by` in the batch's metadata, unless it has one already."""
    row = db.execute(f"SELECT metadata FROM batches WHERE id = {p} {lock}", (batch_id,)).fetchone()
    if row is None:
        return False
    metadata = orjson.loads(row[0]) if row[0] else {}
    if "retried_by" in metadata:
        return False
    metadata["retried_by"] = retry_id
    db.execute(f"UPDATE batches SET metadata = {p} WHERE id = {p}", (orjson.dumps(metadata).decode(), batch_id))
    return True
