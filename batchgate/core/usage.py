"""Usage analytics over the ledger: sums per time bucket (hour, day, month; UTC) and
group (key, project, model, backend, endpoint, batch), synchronous and batch apart."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field

from batchgate.core.errors import InvalidRequestError
from batchgate.core.ledger import BATCH, USAGE_GROUPS, LedgerQuery, UsageRow
from batchgate.core.ports import Store

BUCKETS = {"hour": 3600, "day": 86_400, "month": 86_400}  # months are summed from days


@dataclass(slots=True)
class Totals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost += row.cost


@dataclass(slots=True)
class Bucket:
    start: int
    end: int
    group: dict[str, str | None]
    sync: Totals = field(default_factory=Totals)
    batch: Totals = field(default_factory=Totals)


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """`key,model` → ("key", "model"); InvalidRequestError naming an unknown name."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    if unknown := [n for n in names if n not in USAGE_GROUPS]:
        raise InvalidRequestError(
            f"Unknown group_by {unknown[0]!r}; use any of {', '.join(USAGE_GROUPS)}.",
            param="group_by",
            code="invalid_value",
        )
    return tuple(dict.fromkeys(names))


def _month(start: int) -> tuple[int, int]:
    """The UTC month holding `start`: (its first second, the next month's)."""
    day = dt.datetime.fromtimestamp(start, dt.UTC)
    first = calendar.timegm((day.year, day.month, 1, 0, 0, 0))
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return first, calendar.timegm((year, month, 1, 0, 0, 0))


def usage(store: Store, query: LedgerQuery, group_by: tuple[str, ...], bucket: str) -> list[Bucket]:
    """The buckets in time order, groups in a stable order within each."""
    if bucket not in BUCKETS:
        raise InvalidRequestError(
            f"Unknown bucket {bucket!r}; use hour, day or month.", param="bucket", code="invalid_value"
        )
    seconds = BUCKETS[bucket]
    buckets: dict[tuple[int, tuple[str | None, ...]], Bucket] = {}
    for row in store.ledger_usage(query, group_by, seconds):
        start, end = _month(row.bucket) if bucket == "month" else (row.bucket, row.bucket + seconds)
        key = (start, row.group)
        if key not in buckets:
            buckets[key] = Bucket(start, end, dict(zip(group_by, row.group, strict=True)))
        (buckets[key].batch if row.kind == BATCH else buckets[key].sync).add(row)
    return [buckets[k] for k in sorted(buckets, key=lambda k: (k[0], [str(g) for g in k[1]]))]
