"""The one place where settings pick a concrete store, blob store and backend, and wire
them into the services, the worker and the HTTP app."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from batchgate.core.batches import BatchService
from batchgate.core.errors import InvalidRequestError
from batchgate.core.files import FileService
from batchgate.core.jobs import JobConfig, JobRunner
from batchgate.core.keys import KeyService
from batchgate.core.ports import Backend, BlobStore, Store
from batchgate.core.validation import ValidationLimits
from batchgate.core.worker import Worker, WorkerConfig
from batchgate.settings import Settings
from batchgate.store import LocalBlobStore, SQLiteStore

log = logging.getLogger("batchgate")


def make_backend(name: str) -> Backend:
    if name == "scripted":
        from batchgate.testing import ScriptedBackend

        return ScriptedBackend()
    raise InvalidRequestError(f"Unknown backend {name!r}; available: scripted.", param="backend")


@dataclass
class Services:
    settings: Settings
    store: Store
    blobs: BlobStore
    keys: KeyService
    files: FileService
    batches: BatchService

    def close(self) -> None:
        self.store.close()


def build_services(settings: Settings, store: Store | None = None, blobs: BlobStore | None = None) -> Services:
    store = store or SQLiteStore(settings.db_path)
    blobs = blobs or LocalBlobStore(settings.files_dir)
    return Services(
        settings=settings,
        store=store,
        blobs=blobs,
        keys=KeyService(store),
        files=FileService(store, blobs, settings.max_file_bytes),
        batches=BatchService(store),
    )


def build_worker(services: Services, backend: Backend | None = None) -> Worker:
    s = services.settings
    limits = ValidationLimits(max_line_bytes=s.max_line_bytes, max_lines=s.max_lines, max_errors=s.max_errors)
    jobs = JobRunner(services.store, services.blobs, JobConfig(limits=limits, settle_grace=s.settle_grace))
    config = WorkerConfig(
        concurrency=s.concurrency,
        max_attempts=s.max_attempts,
        backoff_base=s.retry_backoff,
        drain_timeout=s.drain_timeout,
        dead_after=s.dead_worker_after,
        poll_interval=s.poll_interval,
    )
    return Worker(services.store, services.blobs, backend or make_backend(s.backend), jobs, config)


class WorkerThread:
    """Runs a worker's event loop in a background thread of the server process."""

    @classmethod
    def for_services(cls, services: Services) -> WorkerThread:
        """A worker on these services, woken whenever a batch is created or cancelled."""
        thread = cls(build_worker(services))
        services.batches.on_change = thread.wake
        return thread

    def __init__(self, worker: Worker):
        self.worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="batchgate-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            try:
                await self.worker.run(self._stop)
            finally:
                await self.worker.backend.aclose()

        asyncio.run(main())

    def wake(self) -> None:
        """Thread-safe: make the worker look for work now."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.worker.wake)

    def stop(self, timeout: float) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def alive(self, within: float = 10.0) -> bool:
        import time

        return self._thread.is_alive() and time.time() - self.worker.last_tick < within
