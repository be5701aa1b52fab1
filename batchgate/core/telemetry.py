"""Events counted in this process for GET /metrics, beside what is read from the store.

Most of what /metrics reports lives in the store (the ledger, batches) and is read there
at scrape time, so every process tells the same, whole truth (`api/metrics.py`).
Refusals are different: a request turned away by a limit or a spent budget leaves no row
anywhere, so each process counts its own here and reports them as its own; sum them
across processes (`sum by (reason)`).
"""

from __future__ import annotations

import threading


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
