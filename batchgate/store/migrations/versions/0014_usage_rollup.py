"""An hourly rollup of the ledger (store/rollup_sql.py): requests, tokens, cost and errors
per (hour, project, key, model asked, model resolved, backend, endpoint, kind), kept in
the transaction of every ledger insert, so /v1/usage, the console's Usage and Keys pages
and billing sum hours instead of scanning the ledger. Absent values (no key, no model)
are '' there, so the upsert's conflict target matches them (NULLs never conflict).
Backfilled from the ledger's rows. Also: the ledger by (batch_id, pk), for request logs
filtered to one batch (newest first, a page at a time).

Revision ID: 0014
"""

from alembic import op

from batchgate.store.ddl import ddl

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl(
        """CREATE TABLE usage_rollup (
        hour INTEGER NOT NULL,
        project_id TEXT NOT NULL,
        key_id TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        resolved_model TEXT NOT NULL DEFAULT '',
        backend TEXT NOT NULL DEFAULT '',
        endpoint TEXT NOT NULL,
        kind TEXT NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, project_id, key_id, model, resolved_model, backend, endpoint, kind))"""
    )
    ddl("CREATE INDEX usage_rollup_by_project ON usage_rollup(project_id, hour)")
    ddl("CREATE INDEX usage_rollup_by_key ON usage_rollup(key_id, hour)")
    # imported here, not at the top: the SQL is the store's, the migration only runs it once
    from batchgate.store.rollup_sql import backfill_sql

    ddl(backfill_sql(op.get_bind().dialect.name))
    ddl("CREATE INDEX ledger_by_batch ON ledger(batch_id, pk) WHERE batch_id IS NOT NULL")


def downgrade() -> None:
    ddl("DROP INDEX ledger_by_batch")
    ddl("DROP TABLE usage_rollup")
