"""The one place where settings pick a concrete store, blob store and backend, and wire
them into the services, the worker and the HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from batchgate.core.agents.backend import AgentBackend
from batchgate.core.agents.runs import AgentRuns
from batchgate.core.batch_lifecycle import BatchLifecycle
from batchgate.core.batches import BatchService
from batchgate.core.billing_export import BillingExporter
from batchgate.core.budgets import Budgets
from batchgate.core.clock import Clock, SystemClock
from batchgate.core.completions import CompletionService
from batchgate.core.errors import InvalidRequestError
from batchgate.core.files import FileService
from batchgate.core.jobs import JobExecutor, in_thread
from batchgate.core.keys import KeyService
from batchgate.core.metering import MeteredBackend
from batchgate.core.operation_batches import OperationBatches
from batchgate.core.operation_runs import OperationRuns
from batchgate.core.ports import Backend, BlobStore, Store
from batchgate.core.prompts import PromptService
from batchgate.core.ratelimit import PromptTokens
from batchgate.core.response_service import ResponseService
from batchgate.core.responses import ResponsesBackend
from batchgate.core.routing import BUILTIN_BACKEND, Router, RoutingConfig, load_config
from batchgate.core.webhooks import WebhookDispatcher, WebhookService
from batchgate.core.worker import Worker, WorkerConfig
from batchgate.engines.webhook_sender import HttpWebhookSender
from batchgate.jobs_process import (
    SubprocessJobs,
    builtin_model_problem,
    job_runner,
    open_blobs,
    open_store,
    upgrade_database,
)
from batchgate.settings import Settings

log = logging.getLogger("batchgate")


def make_builtin_backend(settings: Settings) -> Backend:
    """The backend for models the routing config does not list: `local` or `scripted`."""
    if settings.backend == "local":
        from batchgate.engines.local.backend import LocalBackend
        from batchgate.engines.local.catalog import ModelCatalog

        return LocalBackend(
            ModelCatalog(settings.models_dir),
            settings.default_model,
            settings.engine_slots,
            settings.engine_ctx_per_slot,
            settings.engine_threads,
            settings.engine_kv_type,
            settings.engine_prefix_reuse,
        )
    if settings.backend == "scripted":
        from batchgate.testing import ScriptedBackend

        return ScriptedBackend()
    raise InvalidRequestError(f"Unknown backend {settings.backend!r}; available: local, scripted.", param="backend")


def make_backend(settings: Settings, routing: RoutingConfig | None = None) -> Router:
    """The router over the built-in backend and the config's upstreams (cheap: a local
    model loads on first use, an upstream connects on first request)."""
    from batchgate.engines.openai_compat.backend import UpstreamBackend

    routing = routing or load_config(settings.config)
    builtin = make_builtin_backend(settings)
    backends: dict[str, Backend] = {BUILTIN_BACKEND: builtin}
    backends |= {name: UpstreamBackend(upstream) for name, upstream in routing.upstreams.items()}
    return Router(routing, backends, builtin)


@dataclass
class Services:
    settings: Settings
    store: Store
    blobs: BlobStore
    keys: KeyService
    files: FileService
    batches: BatchService
    backend: Backend  # shared by the worker and the synchronous endpoints
    completions: CompletionService
    operations: OperationRuns
    operation_batches: OperationBatches
    prompts: PromptService
    agents: AgentRuns
    responses: ResponseService
    clock: Clock  # the time the batch lifecycle reads (a FakeClock in tests)
    budgets: Budgets  # what keys spent of their budgets (the API refuses, workers pause)
    webhooks: WebhookService  # endpoints told when a batch ends (delivered by the workers)
    lifecycle: BatchLifecycle  # pause, resume and retry of batches
    prompt_tokens: PromptTokens | None = None  # counts a prompt's tokens where the model's tokenizer is at hand

    def close(self) -> None:
        self.store.close()


def upgrade_database_apart(settings: Settings) -> None:
    """Migrate the settings' database, when it is behind, in a short-lived child process:
    alembic and SQLAlchemy (~22 MB resident) then never load into a server or worker that
    runs for days, whose store opens a database already at the head revision."""
    from batchgate.store.migrate import is_at_head

    if not is_at_head(settings.database_url or settings.db_path):
        with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as child:
            child.submit(upgrade_database, settings).result()  # the child imports jobs_process, not this


def announces_work(store: Store) -> bool:
    """Whether the store tells every process when work appears (PostgreSQL's NOTIFY), so
    that a worker listening with `work_wakeups` need only poll as a fallback."""
    # not imported: no PostgresStore exists (importing it would load psycopg, ~15 MB, for nothing)
    postgres = sys.modules.get("batchgate.store.postgres")
    return postgres is not None and isinstance(store, postgres.PostgresStore)


@contextlib.contextmanager
def work_wakeups(store: Store, wake: Callable[[], object]) -> Iterator[None]:
    """While the block runs, call `wake` (from another thread) whenever any process
    announces work on this store; nothing on a store that does not announce it."""
    if not announces_work(store):
        yield
        return
    from batchgate.store.postgres import PostgresStore, PostgresWakeups

    assert isinstance(store, PostgresStore)
    wakeups = PostgresWakeups(store.url, wake)
    wakeups.start()
    try:
        yield
    finally:
        wakeups.stop()


def build_services(
    settings: Settings,
    store: Store | None = None,
    blobs: BlobStore | None = None,
    backend: Backend | None = None,
    clock: Clock | None = None,
) -> Services:
    clock = clock or SystemClock()
    store = store or open_store(settings)
    blobs = blobs or open_blobs(settings)
    routing = load_config(settings.config)
    # cheap: a local model loads on first use. Agent and swarm lines need several model
    # calls each: AgentBackend runs them, on the worker and the synchronous endpoints alike
    # /v1/responses lines run as chat completions (ResponsesBackend), which may be agent lines
    # MeteredBackend: every model call of a synchronous request counts in its ledger row
    models = backend or make_backend(settings, routing)
    metered = MeteredBackend(models)  # the router prices each answer
    backend = ResponsesBackend(AgentBackend(metered), routing.native_responses)
    retention = {"batch": settings.retention_batch} if settings.retention_batch else {}
    files = FileService(store, blobs, settings.max_file_bytes, retention)
    batches = BatchService(
        store,
        clock=clock,
        output_retention=settings.retention_batch_output,
        upstream_endpoints=bool(routing.upstreams),
    )
    model_problem = functools.partial(routing.model_problem, builtin_problem=builtin_model_problem(settings))
    operations = OperationRuns(backend, model_problem, settings.max_sync_items)
    return Services(
        settings=settings,
        store=store,
        blobs=blobs,
        keys=KeyService(store, set(routing.profiles)),
        files=files,
        batches=batches,
        backend=backend,
        completions=CompletionService(backend),
        operations=operations,
        operation_batches=OperationBatches(files, batches, operations, settings.max_lines),
        prompts=PromptService(store),
        agents=AgentRuns(files, batches, backend, model_problem, settings.max_agent_batch),
        # PostgreSQL commits concurrent transactions out of ledger id order (core/telemetry.py)
        budgets=Budgets(store, clock, settings.budget_cache_seconds, 60.0 if announces_work(store) else 0.0),
        responses=ResponseService(backend, store, clock, settings.response_retention or None, routing.native_responses),
        clock=clock,
        webhooks=WebhookService(store, clock),
        lifecycle=BatchLifecycle(batches, files),
        prompt_tokens=models.prompt_tokens if isinstance(models, Router) else None,
    )


@contextlib.contextmanager
def open_keys(settings: Settings, check_profiles: bool = False) -> Iterator[KeyService]:
    """Key administration on the settings' store alone: no files, no backend (with
    `check_profiles`, routing profiles are checked against the settings' routing config)."""
    store = open_store(settings)
    try:
        yield KeyService(store, set(load_config(settings.config).profiles) if check_profiles else None)
    finally:
        store.close()


def build_worker(services: Services, backend: Backend | None = None, jobs_in_subprocess: bool = False) -> Worker:
    """A worker on these services. With `jobs_in_subprocess` (the store must be the one
    `services.settings` names), batch jobs run in a child process (on the system clock):
    see SubprocessJobs."""
    s = services.settings
    if jobs_in_subprocess:
        jobs: JobExecutor = SubprocessJobs(s)
    else:
        jobs = in_thread(job_runner(s, services.store, services.blobs, services.clock))
    config = WorkerConfig(
        concurrency=s.concurrency,
        max_attempts=s.max_attempts,
        backoff_base=s.retry_backoff,
        drain_timeout=s.drain_timeout,
        dead_after=s.dead_worker_after,
        sweep_interval=s.sweep_interval,
        budget_check_interval=s.budget_check_interval,
        response_retention=s.response_retention or None,
        poll_interval=s.listen_poll_interval if announces_work(services.store) else s.poll_interval,
    )
    webhooks = WebhookDispatcher(
        services.store,
        HttpWebhookSender(s.webhook_timeout),
        services.clock,
        s.webhook_retry_schedule,
        lease=int(s.webhook_timeout) + 45,
        poll_interval=s.webhook_poll_interval,
    )
    return Worker(
        services.store,
        services.blobs,
        backend or services.backend,
        jobs,
        config,
        services.clock,
        services.budgets,
        webhooks=webhooks,
        prompt_tokens=services.prompt_tokens,
    )


def billing_exporter(services: Services) -> BillingExporter | None:
    """The export of usage to Stripe, when the routing config has a `[billing]` section and
    the secret key's env var is set (None otherwise: nothing is exported)."""
    config = load_config(services.settings.config).billing
    if config is None:
        return None
    if not config.api_key:
        log.warning("billing: $%s is not set: usage is not exported to Stripe", config.api_key_env)
        return None
    from batchgate.engines.stripe_meter import StripeMeterEvents

    sender = StripeMeterEvents(config.api_key, config.api_base, config.timeout)
    return BillingExporter(services.store, config, sender, services.clock)


async def run_worker(worker: Worker, stop: asyncio.Event, billing: BillingExporter | None) -> None:
    """The worker's loop until `stop`, and beside it the billing exporter's (if any)."""
    if billing is None:
        await worker.run(stop)
        return
    export = asyncio.create_task(billing.run(stop))
    try:
        await worker.run(stop)
    finally:
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(export, 5.0)  # a send in flight may finish; one cut off is resent
        await billing.aclose()


async def close_worker(worker: Worker) -> None:
    """Release what a stopped worker holds: its backend's connections, its job process."""
    await worker.backend.aclose()
    if worker.webhooks is not None:
        await worker.webhooks.sender.aclose()
    if isinstance(worker.jobs, SubprocessJobs):
        await asyncio.to_thread(worker.jobs.close)


# the young generation's collection threshold for a long-running process (CPython's is 700)
YOUNG_GC_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once a long-running process (`serve`, `worker`, `run`) has started, take what start-up
    built (modules, the app and its schemas: ~120k objects that live as long as the
    process) out of the cyclic collector's passes (`gc.freeze`), and collect the young
    generation less often. Each line a worker runs allocates objects that outlive a
    700-allocation generation, so with CPython's defaults they were promoted and the full
    collections they caused walked the whole heap: 56 of them, ~75 ms each, in 80,000
    dispatched lines (bench/RESULTS.md, "Garbage collection"). Cyclic garbage is still
    collected, in fewer, later passes."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


class WorkerThread:
    """Runs a worker's event loop in a background thread of the server process."""

    @classmethod
    def for_services(cls, services: Services) -> WorkerThread:
        """A worker on these services, woken whenever a batch is created or cancelled."""
        thread = cls(build_worker(services, jobs_in_subprocess=True))
        thread.billing = billing_exporter(services)
        services.batches.on_change = thread.wake
        return thread

    def __init__(self, worker: Worker):
        self.worker = worker
        self.billing: BillingExporter | None = None  # run beside the worker, in its loop
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
                with work_wakeups(self.worker.store, self.wake):
                    await run_worker(self.worker, self._stop, self.billing)
            finally:
                await close_worker(self.worker)

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
        """The loop ticked recently, and its job process (if any) has started."""
        jobs_ready = not isinstance(self.worker.jobs, SubprocessJobs) or self.worker.jobs.ready
        return self._thread.is_alive() and time.monotonic() - self.worker.last_tick < within and jobs_ready
