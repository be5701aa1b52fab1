"""The ledger's hourly rollup: requests, tokens, cost and errors per (hour, project, key,
model asked, model resolved, backend, endpoint, kind), kept by every store in the
transaction that writes the ledger rows it sums (store/rollup_sql.py, the in-memory store).

Usage (`Store.ledger_usage`) reads it whenever it can: groups among key, project, model,
backend and endpoint, buckets of whole hours (hour, day; months are summed from days), no
batch or status filter. A time range that does not start or end on a whole hour is
exact all the same: its whole hours come from the rollup and its partial hours at either
edge from the ledger's rows (at most two hours of them, by `ledger_by_time`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from batchgate.core.ledger import LedgerEntry, LedgerQuery, UsageRow

HOUR = 3600
# usage's group names the rollup holds, and its columns
ROLLUP_GROUPS = {
    "key": "key_id",
    "project": "project_id",
    "model": "model",
    "backend": "backend",
    "endpoint": "endpoint",
}
# a rollup row's identity: hour, project, key, model, resolved model, backend, endpoint, kind
# (absent values are ''); and its sums: requests, input tokens, output tokens, cost, errors
RollupKey = tuple[int, str, str, str, str, str, str, str]
Sums = list[float]


def hour_of(started_at: float) -> int:
    """The hour a row starting at `started_at` is summed in (whole seconds truncated, as
    the stores bucket the ledger)."""
    return int(started_at) // HOUR * HOUR


def is_error(status_code: int | None, error_code: str | None) -> bool:
    return error_code is not None or (status_code is not None and status_code >= 400)


def entry_key(e: LedgerEntry) -> RollupKey:
    return (
        hour_of(e.started_at), e.project_id, e.key_id or "", e.model or "", e.resolved_model or "",
        e.backend or "", e.endpoint, e.kind,
    )  # fmt: skip


def add(sums: dict[RollupKey, Sums], e: LedgerEntry) -> None:
    """Count one ledger row into `sums`."""
    s = sums.setdefault(entry_key(e), [0, 0, 0, 0.0, 0])
    s[0] += 1
    s[1] += e.input_tokens
    s[2] += e.output_tokens
    s[3] += e.cost
    s[4] += is_error(e.status_code, e.error_code)


@dataclass(slots=True)
class Plan:
    """How to sum a usage query: rollup hours `lo` <= hour < `hi` (None: unbounded), plus
    the ledger's rows of `edges` (the partial hours at the range's edges)."""

    lo: int | None
    hi: int | None
    edges: list[LedgerQuery]


def plan(query: LedgerQuery, group_by: tuple[str, ...], bucket_seconds: int) -> Plan | None:
    """The plan, or None when the rollup cannot answer (then the ledger is summed)."""
    if query.batch_id is not None or query.status_code is not None or query.before is not None:
        return None
    if bucket_seconds % HOUR or any(g not in ROLLUP_GROUPS for g in group_by):
        return None
    lo = None if query.since is None else math.ceil(query.since / HOUR) * HOUR
    hi = None if query.until is None else math.floor(query.until / HOUR) * HOUR
    if lo is not None and hi is not None and lo >= hi:
        return None  # under two hours: the ledger's rows, by time
    edges = []
    if query.since is not None and lo is not None and lo > query.since:
        edges.append(replace(query, until=lo))
    if query.until is not None and hi is not None and hi < query.until:
        edges.append(replace(query, since=hi))
    return Plan(lo, hi, edges)


def matches(query: LedgerQuery, key: RollupKey, lo: int | None, hi: int | None) -> bool:
    """A rollup row within the query's filters and the plan's hours (the in-memory store)."""
    hour, project, key_id, model, resolved, backend, endpoint, _ = key
    if (lo is not None and hour < lo) or (hi is not None and hour >= hi):
        return False
    wanted = ((query.project_id, project), (query.key_id, key_id), (query.backend, backend), (query.endpoint, endpoint))
    if any(value is not None and value != have for value, have in wanted):
        return False
    return query.model is None or query.model in (model, resolved)


_INDEX = {"project": 1, "key": 2, "model": 3, "backend": 5, "endpoint": 6}


def usage_of_sums(
    sums: dict[RollupKey, Sums], query: LedgerQuery, p: Plan, group_by: tuple[str, ...], bucket_seconds: int
) -> list[UsageRow]:
    """The rollup's rows summed per bucket, group and kind (the in-memory store's reading)."""
    out: dict[tuple[int, tuple[str | None, ...], str], UsageRow] = {}
    for key, s in sums.items():
        if not matches(query, key, p.lo, p.hi):
            continue
        bucket = key[0] // bucket_seconds * bucket_seconds
        group = tuple(str(key[_INDEX[g]]) or None for g in group_by)
        row = out.setdefault((bucket, group, key[7]), UsageRow(bucket, group, key[7], 0, 0, 0, 0.0))
        row.requests += int(s[0])
        row.input_tokens += int(s[1])
        row.output_tokens += int(s[2])
        row.cost += s[3]
    return list(out.values())


def merge(parts: Iterable[Iterable[UsageRow]]) -> list[UsageRow]:
    """Rows of the same bucket, group and kind summed, in `usage_of`'s order."""
    out: dict[tuple[int, tuple[str | None, ...], str], UsageRow] = {}
    for part in parts:
        for r in part:
            key = (r.bucket, r.group, r.kind)
            if (have := out.get(key)) is None:
                out[key] = replace(r)
            else:
                have.requests += r.requests
                have.input_tokens += r.input_tokens
                have.output_tokens += r.output_tokens
                have.cost += r.cost
    return sorted(out.values(), key=lambda r: (r.bucket, [str(g) for g in r.group], r.kind))
