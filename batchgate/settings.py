"""Typed configuration, read once from the environment (BATCHGATE_*) and CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHGATE_", extra="ignore")

    home: Path = Field(default=Path(".batchgate"), description="Data dir: database and files.")
    # the shared store of many API and worker processes: `postgresql://user@host/db`.
    # None: SQLite in the data dir (one machine)
    database_url: str | None = None
    database_pool_size: int = 10  # connections per process
    # where file contents live when not in the data dir: `s3://bucket/prefix` (endpoint and
    # credentials from the usual AWS_* environment variables). None: `<home>/files`
    blob_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    insecure_no_auth: bool = False
    # which backend runs the requests: "local" (the embedded llama.cpp engine) or
    # "scripted" (the deterministic echo fake of batchgate.testing, for tests and benchmarks)
    backend: str = "local"
    # the local engine: the model behind `"model": "default"`, and its sequences decoded
    # together, context per sequence and CPU threads
    default_model: str = "qwen2.5-1.5b"
    engine_slots: int = 8
    engine_ctx_per_slot: int = 2048
    engine_threads: int = Field(default_factory=lambda: os.cpu_count() or 2)
    engine_kv_type: Literal["q8_0", "f16"] = "q8_0"  # KV cache precision (q8_0: half the memory)
    engine_prefix_reuse: bool = True  # prompt prefixes computed once, reused from slot to slot
    run_worker: bool = True
    # the routing config (batchgate.toml): upstream backends, model routes, fallbacks,
    # prices; see batchgate/core/routing.py. Without one every model goes to `backend`.
    config: Path | None = None

    # limits
    max_file_bytes: int = 512 * 1024 * 1024
    max_lines: int = 1_000_000
    max_line_bytes: int = 8 * 1024 * 1024
    max_errors: int = 100
    max_sync_items: int = 50  # items per synchronous /api/completions call (more: use /api/batches)
    max_agent_batch: int = 1000  # records per POST /v1/agent|swarm/batch/completions (more: 413)
    # HTTP requests: the request head (line and headers) in bytes and seconds, JSON bodies
    # (the larger limit is for /api/batches, whose `items` hold a whole batch's records)
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 5.0
    max_json_bytes: int = 16 * 1024 * 1024
    max_batch_json_bytes: int = 64 * 1024 * 1024

    # worker
    concurrency: int = 64
    max_attempts: int = 3
    retry_backoff: float = 0.5
    settle_grace: float = 5.0
    drain_timeout: float = 10.0
    dead_worker_after: float = 30.0
    poll_interval: float = 0.1
    # on PostgreSQL, workers are woken by NOTIFY when work appears anywhere: polling is
    # only the fallback for what announces nothing (a retry's wake time, an expiry)
    listen_poll_interval: float = 2.0
    # retention (seconds from creation) of files uploaded without `expires_after`, and of
    # result files of batches created without `output_expires_after`; None: kept
    retention_batch: int | None = Field(None, gt=0)
    retention_batch_output: int | None = Field(None, gt=0)
    sweep_interval: float = 60.0  # seconds between sweeps of expired files, by each worker
    # how long a response created with `store: true` is kept (seconds; OpenAI's 30 days); 0: for ever
    response_retention: int = Field(30 * 86_400, ge=0)
    # how often a batch passed through to an upstream's own Batch API is polled (seconds)
    upstream_poll_interval: int = 5
    # webhooks (core/webhooks.py): seconds between a failed delivery attempt and the next
    # (a JSON list; default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts over ~27.6 h,
    # each wait ±20% jitter), each attempt's timeout, and how often workers look for due ones
    webhook_retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout: float = Field(15.0, gt=0)
    webhook_poll_interval: float = Field(1.0, gt=0)

    # budgets and /metrics: a key's spend is re-read from the ledger at most this often per
    # process (what the process meters itself counts at once); each worker re-checks the
    # keys' budgets this often, pausing and resuming their batches
    budget_cache_seconds: float = Field(1.0, ge=0)
    budget_check_interval: float = Field(1.0, ge=0)
    # GET /metrics without a key (a scraper on a private network); otherwise an admin key
    metrics_public: bool = False

    @property
    def db_path(self) -> Path:
        return self.home / "batchgate.db"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @property
    def models_dir(self) -> Path:
        """Where models assembled from split packages are cached."""
        return self.home / "models"
