"""A batch's running cost (USD): the sum of its lines' costs, priced by the routing config;
and, for a batch passed through to an upstream's own Batch API, that upstream's name and
its batch id there; and the operation (with its items file) of an operation batch.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE batches ADD COLUMN cost REAL NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE batches ADD COLUMN upstream TEXT")
    op.execute("ALTER TABLE batches ADD COLUMN upstream_batch_id TEXT")
    op.execute("ALTER TABLE batches ADD COLUMN operation TEXT")


def downgrade() -> None:
    for column in ("operation", "upstream_batch_id", "upstream", "cost"):
        op.execute(f"ALTER TABLE batches DROP COLUMN {column}")
