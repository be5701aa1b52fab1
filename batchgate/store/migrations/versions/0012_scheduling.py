"""Project weights for fair scheduling (issue 15): a project's share of the claim slots
is in proportion to its weight (1 unless set; core/scheduling.py).

Revision ID: 0012
"""

from batchgate.store.ddl import ddl

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE projects ADD COLUMN weight REAL NOT NULL DEFAULT 1")


def downgrade() -> None:
    ddl("ALTER TABLE projects DROP COLUMN weight")
