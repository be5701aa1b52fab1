"""Keys carry an optional routing profile (a `[profiles.NAME]` of the routing config,
core/routing.py) that their requests and batch lines resolve models through.

Projects may opt in to stored request bodies for their request logs (core/bodies.py):
projects.store_bodies (0/1), projects.body_cap_bytes, and one request_bodies row per
ledger row of an opted-in project's synchronous request.

Revision ID: 0013
"""

from batchgate.store.ddl import ddl

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE api_keys ADD COLUMN routing_profile TEXT")
    ddl("ALTER TABLE projects ADD COLUMN store_bodies INTEGER NOT NULL DEFAULT 0")
    ddl("ALTER TABLE projects ADD COLUMN body_cap_bytes INTEGER NOT NULL DEFAULT 16384")
    ddl(
        """CREATE TABLE request_bodies (
        ledger_id INTEGER PRIMARY KEY,
        request TEXT NOT NULL,
        response TEXT NOT NULL,
        request_truncated INTEGER NOT NULL,
        response_truncated INTEGER NOT NULL)"""
    )


def downgrade() -> None:
    ddl("DROP TABLE request_bodies")
    ddl("ALTER TABLE projects DROP COLUMN body_cap_bytes")
    ddl("ALTER TABLE projects DROP COLUMN store_bodies")
    ddl("ALTER TABLE api_keys DROP COLUMN routing_profile")
