"""A batch's running cost (USD): the sum of its lines' costs, priced by the routing config;
and, for a batch passed through to an upstream's own Batch API, that upstream's name and
its batch id there; the operation (with its items file) of an operation batch; and
prompt templates, each with numbered versions and at most one published.

Revision ID: 0002
"""

from batchgate.store.ddl import ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE batches ADD COLUMN cost REAL NOT NULL DEFAULT 0")
    ddl("ALTER TABLE batches ADD COLUMN upstream TEXT")
    ddl("ALTER TABLE batches ADD COLUMN upstream_batch_id TEXT")
    ddl("ALTER TABLE batches ADD COLUMN operation TEXT")
    ddl(
        """CREATE TABLE prompts (
        project_id TEXT NOT NULL,
        slug TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        published_version INTEGER,
        PRIMARY KEY (project_id, slug))"""
    )
    ddl(
        """CREATE TABLE prompt_versions (
        project_id TEXT NOT NULL,
        slug TEXT NOT NULL,
        version INTEGER NOT NULL,
        messages TEXT NOT NULL,
        model_config TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (project_id, slug, version))"""
    )


def downgrade() -> None:
    ddl("DROP TABLE prompt_versions")
    ddl("DROP TABLE prompts")
    for column in ("operation", "upstream_batch_id", "upstream", "cost"):
        ddl(f"ALTER TABLE batches DROP COLUMN {column}")
