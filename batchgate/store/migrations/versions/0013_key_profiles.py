"""Keys carry an optional routing profile (a `[profiles.NAME]` of the routing config,
core/routing.py) that their requests and batch lines resolve models through.

Revision ID: 0013
"""

from batchgate.store.ddl import ddl

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE api_keys ADD COLUMN routing_profile TEXT")


def downgrade() -> None:
    ddl("ALTER TABLE api_keys DROP COLUMN routing_profile")
