"""Events counted in this process for GET /metrics, beside what is read from the store.

Most of what /metrics reports lives in the store (the ledger, batches) and is read there
at scrape time, so every process tells the same, whole truth (`api/metrics.py`).
Refusals are different: a request turned away by a limit or a spent budget leaves no row
anywhere, so each process counts its own here and reports them as its own; sum them
across processes (`sum by (reason)`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from batchgate.core.ledger import LedgerEntry

if TYPE_CHECKING:
    from batchgate.core.ports import Store


class Rejections:
    """Requests refused by a limiter, per reason, since the process started."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# one per process, as a log is: every limiter of the process counts here
REJECTIONS = Rejections()


def record_rejection(reason: str) -> None:
    """Count one request refused by a limit: `reason` is a short fixed label (`requests`,
    `input_tokens`, `output_tokens`, `tokens`, `parallel`, `budget`), never a key or a
    model (each label value is a time series)."""
    REJECTIONS.add(reason)


# the latency histogram's bucket bounds (ms); a request of a local model on a CPU can
# take minutes, a cached upstream answer tens of milliseconds
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000)


@dataclass(slots=True)
class LedgerTotals:
    """The sums of the ledger rows of one (kind, model, backend, status): `model` as asked
    for (else as resolved), "" when unknown; `status` the HTTP status, "none" for a line
    that ended without an answer."""

    kind: str
    model: str
    backend: str
    status: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_ms: int = 0
    # rows with latency_ms <= each bound of LATENCY_BUCKETS_MS (cumulative, as Prometheus)
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))

    @property
    def labels(self) -> tuple[str, str, str, str]:
        return self.kind, self.model, self.backend, self.status

    def add(self, other: LedgerTotals) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost
        self.latency_ms += other.latency_ms
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


def totals_of(entries: Iterable[LedgerEntry]) -> list[LedgerTotals]:
    """The sums of ledger rows, the way the stores' SQL sums them (the in-memory store's)."""
    sums: dict[tuple[str, str, str, str], LedgerTotals] = {}
    for e in entries:
        status = "none" if e.status_code is None else str(e.status_code)
        row = LedgerTotals(e.kind, e.model or e.resolved_model or "", e.backend or "", status, 1)
        row.input_tokens, row.output_tokens, row.cost, row.latency_ms = (
            e.input_tokens, e.output_tokens, e.cost, e.latency_ms
        )  # fmt: skip
        row.buckets = [int(e.latency_ms <= bound) for bound in LATENCY_BUCKETS_MS]
        if row.labels in sums:
            sums[row.labels].add(row)
        else:
            sums[row.labels] = row
    return list(sums.values())


@dataclass(slots=True)
class BatchGauges:
    """The batches now: how many in each status, how many a spent budget pauses, and the
    lines of running batches not yet done (queued or running) and running."""

    by_status: dict[str, int]
    budget_paused: int
    pending_lines: int
    running_lines: int


class LedgerCounters:
    """The ledger's sums for /metrics, read incrementally: rows are summed once when they
    are settled, and only the newer ones on every scrape.

    Rows are read by id. A row's id is given when it is inserted, and its transaction may
    commit later, so an id may become visible after a larger one. Ids up to the largest
    id seen `settle_seconds` ago are settled: any transaction still open then has committed
    since (store transactions are short). SQLite commits in id order (its writers take
    turns), so 0 suits it; PostgreSQL needs the margin.
    """

    def __init__(self, store: Store, settle_seconds: float):
        self.store = store
        self.settle_seconds = settle_seconds
        self._settled: dict[tuple[str, str, str, str], LedgerTotals] = {}
        self._settled_upto = 0  # ledger ids <= this are in _settled
        self._marks: deque[tuple[float, int]] = deque()  # (time.monotonic(), largest id then)
        self._lock = threading.Lock()

    def read(self) -> list[LedgerTotals]:
        with self._lock:
            now = time.monotonic()
            self._marks.append((now, self.store.ledger_max_id()))
            bound = None
            while self._marks and now - self._marks[0][0] >= self.settle_seconds:
                bound = self._marks.popleft()[1]
            if bound is not None and bound > self._settled_upto:
                _merge(self._settled, self.store.ledger_totals(self._settled_upto, bound))
                self._settled_upto = bound
            result = {k: replace(v, buckets=list(v.buckets)) for k, v in self._settled.items()}
            _merge(result, self.store.ledger_totals(self._settled_upto, None))
            return list(result.values())


def _merge(into: dict[tuple[str, str, str, str], LedgerTotals], rows: Iterable[LedgerTotals]) -> None:
    for row in rows:
        if row.labels in into:
            into[row.labels].add(row)
        else:
            into[row.labels] = replace(row, buckets=list(row.buckets))
