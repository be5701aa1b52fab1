"""The SQL of GET /metrics (core/telemetry.py), shared by the SQLite and PostgreSQL stores
(they differ only in how a parameter is written: `?` or `%s`)."""

from __future__ import annotations

from typing import Any

from batchgate.core.states import RUNNABLE_STATUS, RequestState
from batchgate.core.telemetry import LATENCY_BUCKETS_MS, BatchGauges, LedgerTotals

_GROUP = "kind, coalesce(model, resolved_model, ''), coalesce(backend, ''), status_code"
_BUCKETS = ", ".join(f"sum(CASE WHEN latency_ms <= {int(b)} THEN 1 ELSE 0 END)" for b in LATENCY_BUCKETS_MS)

MAX_ID_SQL = "SELECT coalesce(max(pk), 0) FROM ledger"


def totals_sql(after: int, upto: int | None, p: str) -> tuple[str, list[Any]]:
    """The sums of the ledger rows with after < id <= upto (None: no upper bound)."""
    where, params = f"pk > {p}", [after]
    if upto is not None:
        where += f" AND pk <= {p}"
        params.append(upto)
    sql = (
        f"SELECT {_GROUP}, count(*), sum(input_tokens), sum(output_tokens), sum(cost), sum(latency_ms), {_BUCKETS} "
        f"FROM ledger WHERE {where} GROUP BY {_GROUP}"
    )
    return sql, params


def totals_row(row: tuple[Any, ...]) -> LedgerTotals:
    kind, model, backend, status, requests, tokens_in, tokens_out, cost, latency, *buckets = row
    return LedgerTotals(
        kind, model, backend, "none" if status is None else str(status), int(requests), int(tokens_in),
        int(tokens_out), float(cost), int(latency), [int(b) for b in buckets],
    )  # fmt: skip


# per status: batches, those paused for a budget, lines not yet done (of running batches)
GAUGES_SQL = (
    "SELECT status, count(*), sum(CASE WHEN budget_paused_at IS NULL THEN 0 ELSE 1 END), "
    f"sum(CASE WHEN status = '{RUNNABLE_STATUS.value}' THEN total - completed - failed ELSE 0 END) "
    "FROM batches GROUP BY status"
)
RUNNING_SQL = f"SELECT count(*) FROM requests WHERE state = '{RequestState.RUNNING.value}'"


def gauges(rows: list[tuple[Any, ...]], running: int) -> BatchGauges:
    return BatchGauges(
        by_status={str(r[0]): int(r[1]) for r in rows},
        budget_paused=sum(int(r[2] or 0) for r in rows),
        pending_lines=sum(int(r[3] or 0) for r in rows),
        running_lines=running,
    )
