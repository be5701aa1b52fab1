"""Budgets (core/budgets.py): a batch whose key has spent its budget is paused
(`budget_paused_at`, claimed by no worker until it is cleared), and a key's spend in a
period is an index-only sum over the ledger (key, id, started_at, cost), read again only
for the rows added since the last read (an index range).

Revision ID: 0009
"""

from batchgate.store.ddl import ddl

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE batches ADD COLUMN budget_paused_at INTEGER")
    ddl("CREATE INDEX ledger_by_key ON ledger(key_id, pk, started_at, cost)")


def downgrade() -> None:
    ddl("DROP INDEX ledger_by_key")
    ddl("ALTER TABLE batches DROP COLUMN budget_paused_at")
