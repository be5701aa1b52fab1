"""Webhooks (issue 15): per-project endpoints, the event outbox (one event per batch that
ends, written in the transaction that ends it), one delivery per event and endpoint
with its retry schedule, and a log of every delivery attempt. Batches get `paused_at`
(a user pause: no line of it is claimed while it is set).

Revision ID: 0011
"""

from batchgate.store.ddl import ddl

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE batches ADD COLUMN paused_at INTEGER")
    ddl(
        "CREATE TABLE webhook_endpoints (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, url TEXT NOT NULL, "
        "secret TEXT NOT NULL, events TEXT NOT NULL, description TEXT, created_at INTEGER NOT NULL)"
    )
    ddl("CREATE INDEX webhook_endpoints_project ON webhook_endpoints (project_id)")
    ddl(
        "CREATE TABLE webhook_events (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, batch_id TEXT NOT NULL, "
        "type TEXT NOT NULL, created_at INTEGER NOT NULL, body TEXT NOT NULL)"
    )
    # a batch ends once: one event per batch, whatever replays its end
    ddl("CREATE UNIQUE INDEX webhook_events_batch ON webhook_events (batch_id)")
    ddl(
        "CREATE TABLE webhook_deliveries (pk INTEGER PRIMARY KEY, event_id TEXT NOT NULL, "
        "endpoint_id TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "next_attempt_at INTEGER NOT NULL, last_attempt_at INTEGER, created_at INTEGER NOT NULL)"
    )
    ddl("CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at)")
    ddl("CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, pk)")
    ddl(
        "CREATE TABLE webhook_attempts (delivery_pk INTEGER NOT NULL, attempt INTEGER NOT NULL, "
        "at INTEGER NOT NULL, status_code INTEGER, latency_ms INTEGER NOT NULL, error TEXT, "
        "PRIMARY KEY (delivery_pk, attempt))"
    )


def downgrade() -> None:
    ddl("DROP TABLE webhook_attempts")
    ddl("DROP TABLE webhook_deliveries")
    ddl("DROP TABLE webhook_events")
    ddl("DROP TABLE webhook_endpoints")
    ddl("ALTER TABLE batches DROP COLUMN paused_at")
