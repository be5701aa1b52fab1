"""Keys carry scopes (comma-separated: batch, sync, read, admin), the models they may use
(a JSON list; NULL: any) and an expiry. Existing keys keep what they could do: batch,
sync and read, never admin.

Revision ID: 0007
"""

from batchgate.store.ddl import ddl

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'batch,sync,read'")
    ddl("ALTER TABLE api_keys ADD COLUMN allowed_models TEXT")
    ddl("ALTER TABLE api_keys ADD COLUMN expires_at INTEGER")


def downgrade() -> None:
    ddl("ALTER TABLE api_keys DROP COLUMN expires_at")
    ddl("ALTER TABLE api_keys DROP COLUMN allowed_models")
    ddl("ALTER TABLE api_keys DROP COLUMN scopes")
