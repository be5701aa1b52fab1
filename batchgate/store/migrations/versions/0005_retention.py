"""Retention (core/retention.py): an index of files by expiry, so each sweep reads the
few files that are due, not every file; and a batch's `output_expires_after` (seconds),
the expiry of its output and error files.

Revision ID: 0005
"""

from batchgate.store.ddl import ddl

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("CREATE INDEX files_by_expiry ON files(expires_at) WHERE expires_at IS NOT NULL")
    ddl("ALTER TABLE batches ADD COLUMN output_expires_after INTEGER")


def downgrade() -> None:
    ddl("ALTER TABLE batches DROP COLUMN output_expires_after")
    ddl("DROP INDEX files_by_expiry")
