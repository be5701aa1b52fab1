"""The billing export's outbox (core/billing.py): Stripe meter events computed from the
ledger, one per project, meter, hour and sequence number (0: the hour's first event,
1..: corrections for usage metered after it was sent), and every attempt to send one.
(project_id, meter, bucket_start, seq) and the identifier are unique, so an event
computed twice (two exporters, or a crash and a rerun) is kept once.

Revision ID: 0010
"""

from batchgate.store.ddl import ddl

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl(
        """CREATE TABLE billing_events (
        pk INTEGER PRIMARY KEY,
        identifier TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        meter TEXT NOT NULL,
        bucket_start INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        event_name TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        value INTEGER NOT NULL,
        event_time INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        sent_at INTEGER,
        last_error TEXT,
        UNIQUE (project_id, meter, bucket_start, seq))"""
    )
    ddl("CREATE INDEX billing_events_due ON billing_events(status, next_attempt_at)")
    ddl("CREATE INDEX billing_events_by_bucket ON billing_events(bucket_start)")
    ddl(
        """CREATE TABLE billing_attempts (
        pk INTEGER PRIMARY KEY,
        identifier TEXT NOT NULL,
        at REAL NOT NULL,
        outcome TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        request_id TEXT)"""
    )
    ddl("CREATE INDEX billing_attempts_by_event ON billing_attempts(identifier, pk)")


def downgrade() -> None:
    ddl("DROP TABLE billing_attempts")
    ddl("DROP TABLE billing_events")
