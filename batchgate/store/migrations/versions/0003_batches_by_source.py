"""An index for listing a project's batches of one source (operation batches on
/api/batches): the filter runs in the store, before paging, without scanning the
project's other batches.

Revision ID: 0003
"""

from batchgate.store.ddl import ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("CREATE INDEX batches_by_project_source ON batches(project_id, source, pk)")


def downgrade() -> None:
    ddl("DROP INDEX batches_by_project_source")
