"""Claim candidates and project weights: SQL shared by the SQLite and PostgreSQL stores
(`p` is how a parameter is written). Which lines to claim is core's decision
(`core.scheduling.plan_claims`); this only reads what it decides on."""

from __future__ import annotations

from typing import Any

from batchgate.core.scheduling import ClaimCandidate

PER_PROJECT = 16  # runnable batches of one project a claim looks at (its earliest deadlines first)
CANDIDATES = 256  # runnable batches a claim looks at in all

# what a store needs to claim a candidate's lines, kept in its `ref` in this order (PostgreSQL
# reads them again once it holds the batch's row)
BATCH_COLUMNS = "pk, id, input_file_id, endpoint, claim_cursor, total, requeued"


def candidates_sql(where: str) -> str:
    """Runnable batches (`where` says which, on columns of `batches`), at most
    `PER_PROJECT` per project, so one project's many batches do not hide another's."""
    return (
        f"SELECT {BATCH_COLUMNS}, project_id, key_id, priority, done, created_at, in_progress_at, expires_at, weight "
        f"FROM (SELECT {BATCH_COLUMNS}, project_id, key_id, priority, completed + failed AS done, created_at, "
        "in_progress_at, expires_at, "
        "(SELECT weight FROM projects WHERE projects.id = batches.project_id) AS weight, "
        "row_number() OVER (PARTITION BY project_id ORDER BY priority DESC, expires_at, pk) AS nth "
        f"FROM batches WHERE {where}) AS runnable "
        f"WHERE nth <= {PER_PROJECT} ORDER BY priority DESC, pk LIMIT {CANDIDATES}"
    )


def candidate(row: tuple[Any, ...]) -> ClaimCandidate:
    """A row of `candidates_sql` as core sees it; `ref` keeps the store's columns."""
    ref = tuple(row[:7])
    _, _, _, _, cursor, total, _, project_id, key_id, priority, done, created_at, started_at, expires_at, weight = row
    return ClaimCandidate(
        ref=ref,
        project_id=project_id,
        key_id=key_id,
        weight=1.0 if weight is None else float(weight),
        priority=priority,
        waiting=total - cursor + (total if row[6] else 0),  # requeued rows: at most `total` more
        total=total,
        done=done,
        created_at=created_at,
        started_at=started_at,
        expires_at=expires_at,
    )


def set_weight_sql(p: str) -> str:
    return f"UPDATE projects SET weight = {p} WHERE id = {p}"


WEIGHTS_SQL = "SELECT id, weight FROM projects ORDER BY id"
