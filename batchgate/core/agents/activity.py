"""What a project has been running lately, for `GET /v1/swarm/logs` and
`GET /v1/rate/limits`: read from its batches (the store keeps no other request log yet)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from batchgate.core.batches import BatchService
from batchgate.core.models import BatchRecord

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}


def recent_batches(
    batches: BatchService, project_id: str, since: int, source: str | None = None
) -> Iterator[BatchRecord]:
    """The project's batches created at or after `since`, newest first; with `source`,
    only those (filtered by the store)."""
    after: str | None = None
    while True:
        page = batches.list(project_id, after, 100, source)
        for batch in page.data:
            if batch.created_at < since:
                return
            yield batch
        if not page.has_more or not page.data:
            return
        after = page.data[-1].id


def request_counts(batches: BatchService, project_id: str) -> dict[str, int]:
    """Requests (batch lines, agent and swarm records) accepted per window, up to now."""
    now = int(time.time())
    counts = dict.fromkeys(WINDOWS, 0)
    for batch in recent_batches(batches, project_id, now - WINDOWS["day"]):
        size = int(batch.operation.get("records", batch.total)) if batch.operation else batch.total
        for name, seconds in WINDOWS.items():
            if batch.created_at >= now - seconds:
                counts[name] += size
    return counts


def agent_logs(batches: BatchService, project_id: str, limit: int = 100) -> list[BatchRecord]:
    """The project's latest agent and swarm batches (at most `limit`, within 30 days)."""
    since = int(time.time()) - 30 * 86400
    out = []
    for batch in recent_batches(batches, project_id, since):
        if batch.source in ("agent", "swarm"):
            out.append(batch)
            if len(out) >= limit:
                break
    return out
