"""Responses created with `store: true` (POST /v1/responses): the response object and the
conversation that `previous_response_id` continues, both as JSON.

Revision ID: 0004
"""

from batchgate.store.ddl import ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl(
        """CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        response TEXT NOT NULL,
        messages TEXT NOT NULL)"""
    )


def downgrade() -> None:
    ddl("DROP TABLE responses")
