"""Placeholder: webhook endpoints, their delivery outbox, paused batches and retry links (issue 15). Filled in by the work that needs it; empty until then.

Revision ID: 0011
"""

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
