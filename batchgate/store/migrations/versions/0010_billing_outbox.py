"""Placeholder: the billing export outbox (issue 12). Filled in by the work that needs it; empty until then.

Revision ID: 0010
"""

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
