"""Placeholder: project weights and batch deadlines for fair scheduling (issue 15). Filled in by the work that needs it; empty until then.

Revision ID: 0012
"""

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
