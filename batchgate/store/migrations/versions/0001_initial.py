"""Initial schema: projects, api keys, files, batches, request rows, workers.

Revision ID: 0001
"""

from batchgate.store.ddl import ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Validation stores a batch's line index in chunks (`line_chunks`: packed (line, offset,
# length) triples); request rows are created from it as lines are claimed, so accepting a
# million-line batch costs a few blob writes, not a million row inserts.
# Request rows are keyed by id = (batch_pk << 32) | line: one integer primary key keeps a
# batch's rows clustered in input order (fast range scans for settling and finalizing).
# `claim_cursor` is the position in the line index of the next line never claimed;
# `requeued` flags rows given back to the queue by a dead or stopping worker.
STATEMENTS = [
    """CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL)""",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        name TEXT NOT NULL DEFAULT '',
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER)""",
    """CREATE TABLE files (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        purpose TEXT NOT NULL,
        filename TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER)""",
    "CREATE INDEX files_by_project ON files(project_id, pk)",
    """CREATE TABLE batches (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        input_file_id TEXT NOT NULL,
        completion_window TEXT NOT NULL,
        status TEXT NOT NULL,
        output_file_id TEXT,
        error_file_id TEXT,
        created_at INTEGER NOT NULL,
        in_progress_at INTEGER,
        expires_at INTEGER NOT NULL,
        finalizing_at INTEGER,
        completed_at INTEGER,
        failed_at INTEGER,
        expired_at INTEGER,
        cancelling_at INTEGER,
        cancelled_at INTEGER,
        total INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        metadata TEXT,
        errors TEXT,
        priority INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT 'openai',
        claim_cursor INTEGER,
        requeued INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        wake_at INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX batches_by_project ON batches(project_id, pk)",
    "CREATE INDEX batches_by_input ON batches(input_file_id)",
    "CREATE INDEX batches_by_status ON batches(status, priority, pk)",
    """CREATE TABLE line_chunks (
        batch_pk INTEGER NOT NULL,
        first INTEGER NOT NULL,
        count INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (batch_pk, first))""",
    """CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        custom_id TEXT,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        worker_id TEXT,
        request_id TEXT,
        status_code INTEGER,
        result BLOB,
        error_code TEXT,
        error_message TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        latency_ms INTEGER,
        backend TEXT,
        model TEXT,
        updated_at INTEGER)""",
    "CREATE INDEX requests_running ON requests(id, worker_id) WHERE state = 'running'",
    "CREATE INDEX requests_queued ON requests(id) WHERE state = 'queued'",
    """CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        heartbeat_at REAL NOT NULL)""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        ddl(statement)


def downgrade() -> None:
    for table in ("workers", "requests", "line_chunks", "batches", "files", "api_keys", "projects"):
        ddl(f"DROP TABLE {table}")
