"""Placeholder: rate-limit windows on keys and the shared limiter counters (issue 12). Filled in by the work that needs it; empty until then.

Revision ID: 0008
"""

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
