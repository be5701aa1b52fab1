"""A batch's running cost (USD): the sum of its lines' costs, priced by the routing config.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE batches ADD COLUMN cost REAL NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE batches DROP COLUMN cost")
