"""The webhook outbox's SQL, shared by the SQLite and PostgreSQL stores (they differ in
how a parameter is written, `?` or `%s`, and in how a claim skips rows another worker
holds). `db` is a SQLite connection or a psycopg cursor inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from batchgate.core.ids import new_id
from batchgate.core.states import BatchStatus
from batchgate.core.webhooks import (
    EVENT_OF_STATUS,
    DeliveryStatus,
    DueDelivery,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    event_body,
)

ENDPOINT_COLUMNS = "id, project_id, url, secret, events, description, created_at"
EVENT_COLUMNS = "id, project_id, batch_id, type, created_at, body"
_PENDING = DeliveryStatus.PENDING


def insert_endpoint_sql(p: str) -> str:
    return f"INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ({', '.join([p] * 7)})"


def endpoint_params(e: WebhookEndpoint) -> tuple[Any, ...]:
    return (e.id, e.project_id, e.url, e.secret, ",".join(e.events), e.description, e.created_at)


def endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(row[0], row[1], row[2], row[3], tuple(row[4].split(",")), row[6], row[5])


def select_endpoints_sql(p: str) -> str:
    return f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project_id = {p}"


def event(row: Any) -> WebhookEvent:
    return WebhookEvent(*row)


def select_event_sql(p: str) -> str:
    return f"SELECT {EVENT_COLUMNS} FROM webhook_events WHERE batch_id = {p}"


def enqueue(db: Any, p: str, batch_id: str, status: BatchStatus, now: int) -> None:
    """Write the event of a batch that moved to its final `status`, and a delivery to each
    endpoint of its project subscribed to it. Call inside the transaction of the move."""
    event_type = EVENT_OF_STATUS.get(status)
    if event_type is None:
        return
    event_id = new_id("evt_")
    body = event_body(event_id, event_type, now, batch_id)
    # WHERE before ON CONFLICT: SQLite needs it to parse an upsert of a SELECT
    inserted = db.execute(
        f"INSERT INTO webhook_events ({EVENT_COLUMNS}) SELECT {p}, project_id, id, {p}, {p}, {p} "
        f"FROM batches WHERE id = {p} ON CONFLICT (batch_id) DO NOTHING",
        (event_id, event_type, now, body, batch_id),
    ).rowcount
    if inserted:
        db.execute(
            "INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts, next_attempt_at, created_at) "
            f"SELECT v.id, e.id, '{_PENDING}', 0, {p}, {p} FROM webhook_events v "
            "JOIN webhook_endpoints e ON e.project_id = v.project_id "
            f"WHERE v.id = {p} AND (',' || e.events || ',') LIKE {p}",
            (now, now, event_id, f"%,{event_type},%"),
        )


def due_sql(p: str, lock: str) -> str:
    """The deliveries due at a time, oldest first; `lock` is how the claim skips rows."""
    return (
        "SELECT d.pk, d.event_id, v.body, d.attempts, e.url, e.secret FROM webhook_deliveries d "
        "JOIN webhook_events v ON v.id = d.event_id JOIN webhook_endpoints e ON e.id = d.endpoint_id "
        f"WHERE d.status = '{_PENDING}' AND d.next_attempt_at <= {p} ORDER BY d.next_attempt_at, d.pk LIMIT {p} {lock}"
    )


def claim(db: Any, p: str, lock: str, now: int, limit: int, lease_until: int) -> list[DueDelivery]:
    """Claim due deliveries: each is due again only at `lease_until`, unless an attempt
    is recorded before."""
    rows = db.execute(due_sql(p, lock), (now, limit)).fetchall()
    if rows:
        db.executemany(
            f"UPDATE webhook_deliveries SET next_attempt_at = {p} WHERE pk = {p}", [(lease_until, r[0]) for r in rows]
        )
    return [DueDelivery(*r) for r in rows]


def record_attempt(db: Any, p: str, delivery_id: int, a: WebhookAttempt, next_at: int | None, delivered: bool) -> None:
    """Log an attempt and move its delivery on: delivered, failed for good (no next
    attempt), or pending until `next_at`. An attempt already logged (two workers whose
    leases overlapped) changes nothing."""
    logged = db.execute(
        "INSERT INTO webhook_attempts (delivery_pk, attempt, at, status_code, latency_ms, error) "
        f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING",
        (delivery_id, a.attempt, a.at, a.status_code, a.latency_ms, a.error),
    ).rowcount
    if not logged:
        return
    status = DeliveryStatus.DELIVERED if delivered else DeliveryStatus.PENDING if next_at else DeliveryStatus.FAILED
    db.execute(
        f"UPDATE webhook_deliveries SET attempts = {p}, status = {p}, next_attempt_at = {p}, last_attempt_at = {p} "
        f"WHERE pk = {p} AND status = '{_PENDING}'",
        (a.attempt, status, next_at if status == _PENDING else 0, a.at, delivery_id),
    )


def list_deliveries(db: Any, p: str, endpoint_id: str, project_id: str, limit: int) -> list[WebhookDelivery]:
    rows = db.execute(
        "SELECT d.pk, d.event_id, v.type, v.batch_id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, "
        "d.last_attempt_at, d.created_at FROM webhook_deliveries d JOIN webhook_events v ON v.id = d.event_id "
        f"JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.endpoint_id = {p} AND e.project_id = {p} "
        f"ORDER BY d.pk DESC LIMIT {p}",
        (endpoint_id, project_id, limit),
    ).fetchall()
    deliveries = [
        WebhookDelivery(
            id=r[0], event_id=r[1], event_type=r[2], batch_id=r[3], endpoint_id=r[4], status=r[5], attempts=r[6],
            next_attempt_at=r[7] if r[5] == _PENDING else None, last_attempt_at=r[8], created_at=r[9],
        )
        for r in rows
    ]  # fmt: skip
    if deliveries:
        by_id = {d.id: d for d in deliveries}
        attempts = db.execute(
            "SELECT delivery_pk, attempt, at, status_code, latency_ms, error FROM webhook_attempts "
            f"WHERE delivery_pk IN ({', '.join([p] * len(by_id))}) ORDER BY delivery_pk, attempt",
            tuple(by_id),
        ).fetchall()
        for row in attempts:
            by_id[row[0]].attempt_log.append(WebhookAttempt(*row[1:]))
    return deliveries


def delete_endpoint(db: Any, p: str, endpoint_id: str, project_id: str) -> bool:
    """Delete an endpoint of the project, its deliveries and their attempt logs."""
    deliveries = f"SELECT pk FROM webhook_deliveries WHERE endpoint_id = {p}"
    mine = f"SELECT 1 FROM webhook_endpoints WHERE id = {p} AND project_id = {p}"
    if db.execute(mine, (endpoint_id, project_id)).fetchone() is None:
        return False
    db.execute(f"DELETE FROM webhook_attempts WHERE delivery_pk IN ({deliveries})", (endpoint_id,))
    db.execute(f"DELETE FROM webhook_deliveries WHERE endpoint_id = {p}", (endpoint_id,))
    db.execute(f"DELETE FROM webhook_endpoints WHERE id = {p}", (endpoint_id,))
    return True
