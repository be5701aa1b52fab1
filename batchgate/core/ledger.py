"""The ledger: one metered row per request, synchronous or batch, on every endpoint.

Batch lines are metered by the store, in the transaction that records their result
(`Store.record_results`): a result written is a row metered, and a crash before the
commit leaves neither, so a line is metered exactly once, also across kill -9.

Synchronous requests are metered by the API once the answer is sent (see
`core/metering.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from batchgate.core.models import RequestResult, RequestState

SYNC, BATCH = "sync", "batch"
# a run's outcome is metered; a line settled without running (cancelled, expired) is not
METERED_STATES = frozenset({RequestState.SUCCEEDED, RequestState.FAILED})


@dataclass(slots=True)
class LedgerEntry:
    """One metered request. `cost` is in USD, the batch discount already applied.
    `id` is assigned by the store (ascending: newer rows have larger ids)."""

    kind: str  # SYNC or BATCH
    project_id: str
    endpoint: str
    started_at: float  # epoch seconds
    finished_at: float
    key_id: str | None = None
    batch_id: str | None = None
    line: int | None = None  # the batch line's number
    model: str | None = None  # as asked for
    resolved_model: str | None = None  # as the backend named it
    backend: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_ms: int = 0
    status_code: int | None = None
    error_code: str | None = None
    id: int = 0


@dataclass(slots=True)
class LedgerQuery:
    """Which ledger rows to read, newest first. `before`: the id of the last row of the
    previous page (a cursor); `project_id` None reads every project (admin)."""

    project_id: str | None = None
    key_id: str | None = None
    batch_id: str | None = None
    model: str | None = None
    backend: str | None = None
    endpoint: str | None = None
    status_code: int | None = None
    since: float | None = None  # started_at >= since
    until: float | None = None  # started_at < until
    before: int | None = None
    limit: int = 100

    def matches(self, e: LedgerEntry) -> bool:
        """The query's filters on one row (the in-memory store's reading of the SQL)."""
        wanted = {
            "project_id": self.project_id,
            "key_id": self.key_id,
            "batch_id": self.batch_id,
            "backend": self.backend,
            "endpoint": self.endpoint,
            "status_code": self.status_code,
        }
        if any(value is not None and getattr(e, name) != value for name, value in wanted.items()):
            return False
        if self.model is not None and self.model not in (e.model, e.resolved_model):
            return False
        if self.since is not None and e.started_at < self.since:
            return False
        if self.until is not None and e.started_at >= self.until:
            return False
        return self.before is None or e.id < self.before


# usage's `group_by` names, and the ledger columns they group on
USAGE_GROUPS = {
    "key": "key_id",
    "project": "project_id",
    "model": "model",
    "backend": "backend",
    "endpoint": "endpoint",
    "batch": "batch_id",
}


@dataclass(slots=True)
class UsageRow:
    """The sums of one time bucket and group (in `group_by` order), for one kind."""

    bucket: int  # the bucket's start, epoch seconds (UTC)
    group: tuple[str | None, ...]
    kind: str  # SYNC or BATCH
    requests: int
    input_tokens: int
    output_tokens: int
    cost: float


def usage_of(entries: list[LedgerEntry], group_by: tuple[str, ...], bucket_seconds: int) -> list[UsageRow]:
    """The sums of rows, the way the stores' SQL sums them (the in-memory store's usage)."""
    sums: dict[tuple[int, tuple[str | None, ...], str], UsageRow] = {}
    for e in entries:
        bucket = int(e.started_at) // bucket_seconds * bucket_seconds
        group = tuple(getattr(e, USAGE_GROUPS[g]) for g in group_by)
        row = sums.setdefault((bucket, group, e.kind), UsageRow(bucket, group, e.kind, 0, 0, 0, 0.0))
        row.requests += 1
        row.input_tokens += e.input_tokens
        row.output_tokens += e.output_tokens
        row.cost += e.cost
    return sorted(sums.values(), key=lambda r: (r.bucket, [str(g) for g in r.group], r.kind))


def error_code(r: RequestResult) -> str | None:
    """A batch line's error code: the worker's, or the one in the backend's error answer."""
    if r.error_code or r.state != RequestState.FAILED or not r.body:
        return r.error_code
    try:
        error = orjson.loads(r.body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return str(error["code"]) if isinstance(error, dict) and error.get("code") is not None else None


def batch_entry(r: RequestResult, project_id: str, key_id: str | None, endpoint: str, now: int) -> LedgerEntry:
    """A batch line's row, as the stores write it with the line's result."""
    return LedgerEntry(
        BATCH, project_id, endpoint, now - r.latency_ms / 1000, now, key_id, r.batch_id, r.line,
        r.requested_model, r.model, r.backend, r.input_tokens, r.output_tokens, r.cost, r.latency_ms,
        r.status_code, error_code(r),
    )  # fmt: skip
