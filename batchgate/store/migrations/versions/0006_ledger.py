"""The ledger (core/ledger.py): one metered row per request, synchronous or batch. A batch
line's row is written with its result, and (batch_id, line) is unique, so a line is never
metered twice. Batches and files record the key that created them.

Revision ID: 0006
"""

from batchgate.store.ddl import ddl

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl(
        """CREATE TABLE ledger (
        pk INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        project_id TEXT NOT NULL,
        key_id TEXT,
        batch_id TEXT,
        line INTEGER,
        endpoint TEXT NOT NULL,
        model TEXT,
        resolved_model TEXT,
        backend TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        latency_ms INTEGER NOT NULL DEFAULT 0,
        status_code INTEGER,
        error_code TEXT,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL)"""
    )
    ddl("CREATE UNIQUE INDEX ledger_batch_line ON ledger(batch_id, line) WHERE batch_id IS NOT NULL")
    ddl("CREATE INDEX ledger_by_project ON ledger(project_id, pk)")
    ddl("CREATE INDEX ledger_by_time ON ledger(started_at)")
    ddl("ALTER TABLE batches ADD COLUMN key_id TEXT")
    ddl("ALTER TABLE files ADD COLUMN key_id TEXT")


def downgrade() -> None:
    ddl("ALTER TABLE files DROP COLUMN key_id")
    ddl("ALTER TABLE batches DROP COLUMN key_id")
    ddl("DROP TABLE ledger")
