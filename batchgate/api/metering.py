"""Pure ASGI middleware that meters synchronous requests: one ledger row per request to
a model endpoint, written once its answer is sent (a stream's too), with what its
backend calls used (`core/metering.py`), its status and its error code.

It also sets the request's `Caller`, so what the request creates (batches, files)
records the key that created it. It runs inside `BodyGate`, which authenticates every
request with a body before it gets here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from batchgate.core.bodies import BodySettings, Capture, SettingsCache, captured
from batchgate.core.ledger import SYNC, LedgerEntry
from batchgate.core.metering import Caller, SyncUsage, current_caller, current_usage

log = logging.getLogger("batchgate.metering")

# the synchronous endpoints that run models (POST): each answer is one ledger row
METERED_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/agent/completions",
        "/v1/swarm/completions",
        *(f"/api/completions/{op}" for op in ("label", "summarize", "extract", "enrich", "run")),
    }
)
_ERROR_BODY_LIMIT = 64 * 1024  # enough for any error body; its code is all that is read


class Metering:
    def __init__(self, app: Any, services: Any):
        self.app = app
        self.services = services
        self.body_settings = SettingsCache()  # which projects keep their requests' bodies (core/bodies.py)

    async def _bodies(self, project_id: str) -> BodySettings:
        cached = self.body_settings.get(project_id)
        if cached is not None:
            return cached
        settings = await run_in_threadpool(self.services.store.project_bodies, project_id)
        return self.body_settings.put(project_id, settings)

    def _caller(self, scope: dict) -> Caller | None:
        key = scope.get("state", {}).get("api_key")
        if key is not None:
            return Caller(key.id, key.project_id, key.allowed_models, key.routing_profile)
        default = getattr(scope["app"].state, "default_project_id", None) if "app" in scope else None
        return Caller(None, default) if default else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        caller = self._caller(scope)
        caller_token = current_caller.set(caller)
        try:
            if caller is None or scope["method"] != "POST" or scope["path"] not in METERED_PATHS:
                await self.app(scope, receive, send)
                return
            await self._metered(scope, receive, send, caller)
        finally:
            current_caller.reset(caller_token)

    async def _metered(self, scope: dict, receive: Any, send: Any, caller: Caller) -> None:
        usage = SyncUsage()
        usage_token = current_usage.set(usage)
        started, clock = time.time(), time.perf_counter()
        status = 500  # an exception before the answer started: the server's error handler answers 500
        error_body = bytearray()
        pending = 0.0  # the cost counted against the key's budget as the answer was sent
        keep = await self._bodies(caller.project_id)  # the project's opt-in to stored bodies
        request_body = Capture(keep.body_cap_bytes) if keep.store_bodies else None
        response_body = Capture(keep.body_cap_bytes) if keep.store_bodies else None
        if request_body is not None:
            inner_receive = receive

            async def receive() -> dict:
                message = await inner_receive()
                if message["type"] == "http.request":
                    request_body.add(message.get("body", b""))
                return message

        async def watch(message: dict) -> None:
            nonlocal status, pending
            if message["type"] == "http.response.body" and not message.get("more_body") and not pending:
                # before the client can read the answer and ask again: its next budget check sees this cost
                pending = usage.cost
                self.services.budgets.spending(caller.key_id, pending)
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400 and len(error_body) < _ERROR_BODY_LIMIT:
                error_body.extend(message.get("body", b"")[:_ERROR_BODY_LIMIT])
            if response_body is not None and message["type"] == "http.response.body":
                response_body.add(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            current_usage.reset(usage_token)
            latency = time.perf_counter() - clock
            entry = LedgerEntry(
                SYNC, caller.project_id, scope["path"], started, started + latency, caller.key_id,
                model=usage.model, resolved_model=usage.resolved_model, backend=",".join(usage.backends) or None,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost=usage.cost,
                latency_ms=int(latency * 1000), status_code=status, error_code=_error_code(bytes(error_body)),
            )  # fmt: skip

            def write() -> float:
                self.services.store.add_ledger_entry(entry)
                return entry.cost

            try:
                await run_in_threadpool(self.services.budgets.write_spent, caller.key_id, pending, write)
                if request_body is not None and response_body is not None:
                    bodies = captured(request_body, response_body)
                    await run_in_threadpool(self.services.store.add_request_bodies, entry.id, bodies)
            except Exception:  # the answer is already sent: a metering failure cannot change it
                log.exception("could not meter %s %s", scope["method"], scope["path"])


def _error_code(body: bytes) -> str | None:
    """The `error.code` of an OpenAI error body."""
    if not body:
        return None
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return str(error["code"]) if isinstance(error, dict) and error.get("code") is not None else None
