"""Stored responses by `created_at`: the retention sweep (core/retention.py) deletes the
responses created before a time, oldest first, a chunk at a time
(store/responses_sql.py `delete_expired_sql`: `WHERE created_at < ? ORDER BY created_at
LIMIT ?`); with this index each chunk is a range of it instead of a scan and sort of
every stored response.

Revision ID: 0015
"""

from batchgate.store.ddl import ddl

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("CREATE INDEX responses_by_created_at ON responses(created_at)")


def downgrade() -> None:
    ddl("DROP INDEX responses_by_created_at")
