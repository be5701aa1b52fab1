"""HTTP routes only: parse, authorise, call core, map core errors to HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from batchgate import __version__
from batchgate.api import (
    admin,
    agents,
    batch_lifecycle,
    batches,
    budgets,
    completions,
    errors,
    files,
    health,
    metrics,
    openapi,
    operations,
    prompts,
    responses,
    scheduling,
    usage,
    webhooks,
)
from batchgate.api.budgets import BudgetGate
from batchgate.api.limits import BodyGate
from batchgate.api.metering import Metering
from batchgate.api.ratelimit import RateLimits
from batchgate.app import Services, WorkerThread
from batchgate.console.site import console_app
from batchgate.core.ids import IdSequence

log = logging.getLogger("batchgate.api")


class RequestLog:
    """Pure ASGI middleware (so uploads and downloads stream untouched): gives every
    request an id, returns it as `x-request-id`, and logs method, path, status and time."""

    def __init__(self, app: Any):
        self.app = app
        self._ids = IdSequence("req_")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._ids.next()
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %s -> %d in %.1f ms",
                request_id, scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000,
            )  # fmt: skip


def create_app(services: Services, worker_thread: WorkerThread | None = None) -> FastAPI:
    """The HTTP app. `worker_thread`, if given, runs for the app's lifetime and drains on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if worker_thread is not None:
            worker_thread.start()
        yield
        if worker_thread is not None:
            worker_thread.stop(services.settings.drain_timeout + 5)
        services.close()

    app = FastAPI(
        title="batchgate",
        version=__version__,
        lifespan=lifespan,
        description="OpenAI-compatible Files and Batches API for bulk LLM work.",
    )
    app.state.services = services
    app.state.worker_thread = worker_thread
    app.state.default_project_id = services.keys.default_project().id if services.settings.insecure_no_auth else None
    errors.install(app)
    openapi.install(app)
    app.include_router(health.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(batch_lifecycle.router)
    app.include_router(webhooks.router)
    app.include_router(completions.router)
    app.include_router(responses.router)
    app.include_router(operations.router)
    app.include_router(prompts.router)
    app.include_router(agents.router)
    app.include_router(admin.router)
    app.include_router(scheduling.router)
    app.include_router(usage.router)
    app.include_router(budgets.router)
    app.include_router(metrics.router)
    app.mount("/console", console_app(services))  # the web console: its own pages and gate
    app.add_middleware(RateLimits, services=services)  # inside Metering: 429s are metered, usage settled
    app.add_middleware(BudgetGate, services=services)  # inside Metering: its refusals are metered
    app.add_middleware(Metering, services=services)  # inside BodyGate: it sees the authenticated key
    app.add_middleware(BodyGate, services=services)  # inside RequestLog: its refusals are logged too
    app.add_middleware(RequestLog)
    return app
