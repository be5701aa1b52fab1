"""Typed configuration, read once from the environment (BATCHGATE_*) and CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHGATE_", extra="ignore")

    home: Path = Field(default=Path(".batchgate"), description="Data dir: database and files.")
    host: str = "127.0.0.1"
    port: int = 8000
    insecure_no_auth: bool = False
    # which backend runs the requests; "scripted" is the deterministic fake of
    # batchgate.testing, for tests and benchmarks
    backend: str = "scripted"
    run_worker: bool = True

    # limits
    max_file_bytes: int = 512 * 1024 * 1024
    max_lines: int = 1_000_000
    max_line_bytes: int = 8 * 1024 * 1024
    max_errors: int = 100

    # worker
    concurrency: int = 64
    max_attempts: int = 3
    retry_backoff: float = 0.5
    settle_grace: float = 5.0
    drain_timeout: float = 10.0
    dead_worker_after: float = 30.0
    poll_interval: float = 0.1

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
