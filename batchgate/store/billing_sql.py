"""The billing outbox's SQL (core/billing.py), shared by the SQLite and PostgreSQL stores:
they differ in how a parameter is written (`?` or `%s`) and in how a claim locks its row
(PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite's write transaction locks the database)."""

from __future__ import annotations

from typing import Any

from batchgate.core.billing import FAILED, PENDING, SENT, BillingAttempt, BillingEvent, BillingSummary, BillingTotal

EVENT_COLUMNS = (
    "identifier, project_id, meter, bucket_start, seq, event_name, customer_id, value, event_time, created_at, "
    "status, attempts, next_attempt_at, sent_at, last_error"
)
ATTEMPT_COLUMNS = "identifier, at, outcome, status_code, error, request_id"


def insert_sql(p: str) -> str:
    """One event, unless its identifier or (project, meter, hour, seq) is already there."""
    return f"INSERT INTO billing_events ({EVENT_COLUMNS}) VALUES ({', '.join([p] * 15)}) ON CONFLICT DO NOTHING"


def event_params(e: BillingEvent) -> tuple[Any, ...]:
    return (
        e.identifier, e.project_id, e.meter, e.bucket_start, e.seq, e.event_name, e.customer_id, e.value,
        e.timestamp, e.created_at, e.status, e.attempts, e.next_attempt_at, e.sent_at, e.last_error,
    )  # fmt: skip


def event(row: tuple[Any, ...]) -> BillingEvent:
    (identifier, project_id, meter, bucket_start, seq, event_name, customer_id, value, timestamp, created_at,
     status, attempts, next_attempt_at, sent_at, last_error) = row  # fmt: skip
    return BillingEvent(
        identifier, project_id, meter, bucket_start, seq, event_name, customer_id, value, timestamp, created_at,
        status, attempts, float(next_attempt_at), sent_at, last_error,
    )  # fmt: skip


def totals_sql(p: str) -> str:
    return (
        "SELECT project_id, meter, bucket_start, sum(value), count(*) FROM billing_events "
        f"WHERE bucket_start >= {p} GROUP BY project_id, meter, bucket_start"
    )


def total(row: tuple[Any, ...]) -> BillingTotal:
    project_id, meter, bucket_start, value, events = row
    return BillingTotal(project_id, meter, int(bucket_start), int(value), int(events))


def due_sql(p: str, lock: str = "") -> str:
    """The pending event due first (then, in the same transaction, `lease_sql`)."""
    return (
        f"SELECT pk, {EVENT_COLUMNS} FROM billing_events WHERE status = '{PENDING}' AND next_attempt_at <= {p} "
        f"ORDER BY next_attempt_at, pk LIMIT 1{lock}"
    )


def lease_sql(p: str) -> str:
    return f"UPDATE billing_events SET next_attempt_at = {p} WHERE pk = {p}"


def outcome_sql(p: str) -> str:
    """An attempt's outcome on its event (one still pending: an event another exporter
    recorded as sent stays sent)."""
    return (
        f"UPDATE billing_events SET status = {p}, attempts = attempts + 1, next_attempt_at = {p}, "
        f"sent_at = {p}, last_error = {p} WHERE identifier = {p} AND status = '{PENDING}'"
    )


def outcome_params(a: BillingAttempt, status: str, next_attempt_at: float) -> tuple[Any, ...]:
    sent_at = int(a.at) if status == SENT else None
    return status, next_attempt_at, sent_at, a.error, a.identifier


def attempt_insert_sql(p: str) -> str:
    return f"INSERT INTO billing_attempts ({ATTEMPT_COLUMNS}) VALUES ({', '.join([p] * 6)})"


def attempt_params(a: BillingAttempt) -> tuple[Any, ...]:
    return a.identifier, a.at, a.outcome, a.status_code, a.error, a.request_id


def attempts_sql(p: str) -> str:
    return f"SELECT {ATTEMPT_COLUMNS} FROM billing_attempts WHERE identifier = {p} ORDER BY pk"


def list_sql(p: str, status: str | None) -> tuple[str, list[Any]]:
    """Events, newest first."""
    where, params = (f" WHERE status = {p}", [status]) if status is not None else ("", [])
    return f"SELECT {EVENT_COLUMNS} FROM billing_events{where} ORDER BY pk DESC LIMIT {p}", params


def retry_failed_sql(p: str) -> str:
    return f"UPDATE billing_events SET status = '{PENDING}', next_attempt_at = {p} WHERE status = '{FAILED}'"


SUMMARY_SQL = "SELECT status, count(*), min(next_attempt_at) FROM billing_events GROUP BY status"


def summary(rows: list[tuple[Any, ...]]) -> BillingSummary:
    s = BillingSummary()
    for status, count, next_attempt_at in rows:
        if status in (PENDING, SENT, FAILED):
            setattr(s, status, int(count))
        if status == PENDING:
            s.next_attempt_at = float(next_attempt_at)
    return s
