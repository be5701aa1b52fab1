"""Batch jobs (validate, settle, finalize) in a child process, and what such a child
opens: the store and the files the settings name, and the job runner over them; also
the store's migration, which `serve` and `worker` run in a child of its own
(app.upgrade_database_apart).

Apart from app.py so that a child imports only this and the store, not the HTTP app,
the backends and their libraries: a spawned child imports the module of the function it
runs, and this one keeps the job child ~8 MB smaller (48.6 MB against 57.0 MB idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from batchgate.core.clock import Clock
from batchgate.core.errors import InvalidRequestError
from batchgate.core.jobs import JobConfig, JobRunner
from batchgate.core.models import BatchJob
from batchgate.core.passthrough import Passthrough
from batchgate.core.ports import BlobStore, Store
from batchgate.core.routing import load_config
from batchgate.core.validation import ValidationLimits
from batchgate.settings import Settings
from batchgate.store import LocalBlobStore, SQLiteStore


def open_store(settings: Settings) -> Store:
    """The store the settings name: PostgreSQL for a `postgresql://` database URL,
    else SQLite in the data dir. Either brings its schema up to date first."""
    if settings.database_url is None:
        return SQLiteStore(settings.db_path)
    from batchgate.store.postgres import PostgresStore, is_postgres_url

    if not is_postgres_url(settings.database_url):
        raise InvalidRequestError(f"unsupported database URL {settings.database_url!r}: use postgresql://...")
    return PostgresStore(settings.database_url, settings.database_pool_size)


def open_blobs(settings: Settings) -> BlobStore:
    """Where file contents live: S3-compatible object storage for an `s3://` blob URL,
    else the data dir's `files/` (also fine on a filesystem every host mounts)."""
    if settings.blob_url is None:
        return LocalBlobStore(settings.files_dir)
    if not settings.blob_url.startswith("s3://"):
        raise InvalidRequestError(f"unsupported blob URL {settings.blob_url!r}: use s3://bucket/prefix")
    from batchgate.store.s3 import S3BlobStore

    return S3BlobStore(settings.blob_url)


def upgrade_database(settings: Settings) -> str:
    """Migrate the settings' database to the newest schema; where it is, for the operator."""
    from batchgate.store.migrate import upgrade_postgres, upgrade_sqlite
    from batchgate.store.postgres import redacted
    from batchgate.store.private import private_database

    if settings.database_url is None:
        private_database(settings.db_path)  # the data dir 0700 and the database 0600 before alembic writes it
        upgrade_sqlite(settings.db_path)
        return str(settings.db_path)
    upgrade_postgres(settings.database_url)
    return redacted(settings.database_url)


def builtin_model_problem(settings: Settings) -> Callable[[str], str | None] | None:
    """The check of model names for the built-in backend (None: it takes any name)."""
    if settings.backend != "local":
        return None
    from batchgate.engines.local.catalog import local_model_problem

    return local_model_problem


def job_runner(s: Settings, store: Store, blobs: BlobStore, clock: Clock | None = None) -> JobRunner:
    """The batch jobs on this store: validation checks every line's model against the
    routing config and the built-in backend (no backend is built: names only)."""
    routing = load_config(s.config)
    builtin = builtin_model_problem(s)
    limits = ValidationLimits(
        max_line_bytes=s.max_line_bytes,
        max_lines=s.max_lines,
        max_errors=s.max_errors,
        check_model=functools.partial(routing.model_problem, builtin_problem=builtin),
    )
    passthrough = None
    if any(route.native_batch for route in routing.routes.values()):
        from batchgate.engines.openai_compat.native import NativeBatches

        passthrough = Passthrough(
            store,
            blobs,
            routing,
            lambda upstream: NativeBatches(routing.upstreams[upstream]),
            s.max_line_bytes,
            poll_interval=s.upstream_poll_interval,
            clock=clock,
        )
    config = JobConfig(
        limits,
        s.settle_grace,
        passthrough,
        routing.native_upstream,
        lambda profile, model: routing.model_problem(model, builtin, profile=profile),
    )
    return JobRunner(store, blobs, config, clock)


class SubprocessJobs:
    """Runs batch jobs in one child process.

    Validating or finalizing a million-line batch is seconds of pure-Python CPU; in a
    thread it would hold the GIL and slow every running batch and API call of the server
    several-fold. A child process uses the other core instead. The child opens the same
    SQLite store and files by path, and dies with its parent (PR_SET_PDEATHSIG), so a
    kill -9 of the server can never leave it writing a batch another worker redoes.
    """

    def __init__(self, settings: Settings):
        self._settings = settings.model_dump()
        self._pool: ProcessPoolExecutor | None = None
        self._warmup = self._executor().submit(_child_ready)  # start the child now, not on the first batch

    @property
    def ready(self) -> bool:
        return self._warmup.done() and not self._warmup.exception()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # never fork a threaded server
            self._pool = ProcessPoolExecutor(
                1,
                context,
                initializer=_child_init,
                initargs=(self._settings, os.getpid(), logging.getLogger().getEffectiveLevel()),
            )
        return self._pool

    async def __call__(self, job: BatchJob) -> int | None:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), _child_run, job)
        except BrokenProcessPool:
            self._pool = None  # the child died (e.g. OOM-killed); the next job starts a new one
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_child_runner: JobRunner | None = None


def _child_init(settings: dict[str, Any], parent_pid: int, log_level: int) -> None:
    global _child_runner
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere the child may outlive us
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the line above took effect
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[jobs]: %(message)s")
    # only the store and the files: jobs never call a backend, so none is loaded here
    s = Settings(**settings)
    _child_runner = job_runner(s, open_store(s), open_blobs(s))


def _child_ready() -> bool:
    return _child_runner is not None


def _child_run(job: BatchJob) -> int | None:
    assert _child_runner is not None
    return _child_runner.run(job)
