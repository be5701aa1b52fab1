"""Keys carry rate limits (a JSON list of {kind, limit, window_s}; NULL: none), a cap on
parallel requests, and a budget (USD per period, with a soft threshold). The limiter's
counters live here too, so every API process and worker on one database shares them
(core/ratelimit.py): one row per key and limit (how much of it is in use, as of when),
one lease per request running under a key with max_parallel_requests, and why a batch's
lines wait (its pacing, shown on the batch).

Revision ID: 0008
"""

from batchgate.store.ddl import ddl

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl("ALTER TABLE api_keys ADD COLUMN limits TEXT")
    ddl("ALTER TABLE api_keys ADD COLUMN max_parallel_requests INTEGER")
    ddl("ALTER TABLE api_keys ADD COLUMN budget_usd REAL")
    ddl("ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'month'")
    ddl("ALTER TABLE api_keys ADD COLUMN budget_soft_usd REAL")
    ddl(
        """CREATE TABLE rate_limit_levels (
        key_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        window_s INTEGER NOT NULL,
        level REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (key_id, kind, window_s))"""
    )
    ddl(
        """CREATE TABLE rate_limit_leases (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        expires_at REAL NOT NULL)"""
    )
    ddl("CREATE INDEX rate_limit_leases_by_key ON rate_limit_leases(key_id, expires_at)")
    ddl("CREATE TABLE batch_pacing (batch_id TEXT PRIMARY KEY, until REAL, note TEXT)")


def downgrade() -> None:
    ddl("DROP TABLE batch_pacing")
    ddl("DROP TABLE rate_limit_leases")
    ddl("DROP TABLE rate_limit_levels")
    for column in ("budget_soft_usd", "budget_period", "budget_usd", "max_parallel_requests", "limits"):
        ddl(f"ALTER TABLE api_keys DROP COLUMN {column}")
