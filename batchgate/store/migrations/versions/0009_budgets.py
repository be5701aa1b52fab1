"""Placeholder: key budgets and batches paused for a spent budget (issue 12). Filled in by the work that needs it; empty until then.

Revision ID: 0009
"""

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
