"""Pure ASGI middleware that enforces a key's rate limits and parallel cap on every
synchronous model endpoint (`METERED_PATHS`: chat, completions, embeddings, responses,
operations, agents), in one place for all of them.

It runs inside `Metering` (so a refusal is metered, and the request's real usage is
known when it ends) and inside `BodyGate` (so the key is authenticated and the body read
whole). A request over a limit gets 429 `rate_limit_exceeded` with `Retry-After`; every
answer to a key with limits carries OpenAI's `x-ratelimit-*` headers. Token limits are
charged the estimated cost at admission and settled with the real usage after the
answer is sent, so the settlement adds nothing to the caller's latency.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool

from batchgate.api.errors import to_response
from batchgate.api.metering import METERED_PATHS
from batchgate.core.errors import RateLimitError
from batchgate.core.metering import current_usage
from batchgate.core.models import ApiKey
from batchgate.core.ports import Store
from batchgate.core.ratelimit import Cost, Decision, Limiter, estimate_cost, is_limited, reset_text
from batchgate.core.telemetry import record_rejection
from batchgate.protocol import openai as wire

log = logging.getLogger("batchgate.ratelimit")

# a body up to this size has its tokens estimated (or counted by a local tokenizer) and
# its limits checked on the event loop when the store can step at once: a thread hop
# costs more than that work, and its wait for the GIL makes a p99 of milliseconds
ON_LOOP_BYTES = 16 * 1024


class RateLimits:
    def __init__(self, app: Any, services: Any):
        self.app = app
        self.limiter = Limiter(services.store)
        self.prompt_tokens = services.prompt_tokens  # a local model's tokenizer, where there is one

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        key: ApiKey | None = scope.get("state", {}).get("api_key") if scope["type"] == "http" else None
        if not is_limited(key) or scope["method"] != "POST" or scope["path"] not in METERED_PATHS:
            await self.app(scope, receive, send)
            return
        assert key is not None
        payload: Any = None  # no token limits: the body is not read here
        size = 0
        if any(limit.kind != "requests" for limit in key.limits):
            body = await _body(receive)
            if body is None:
                return  # the client went away
            payload, size = _json(body), len(body)
            receive = _replay(body, receive)

        cost, decision = await self._admit(key, payload, size, scope["path"])
        headers = ratelimit_headers(decision)
        if not decision.allowed:
            record_rejection(decision.refused_by.kind if decision.refused_by is not None else "parallel")
            tokens = decision.refused_by is not None and decision.refused_by.kind != "requests"
            retry = None if decision.never else decision.retry_after
            await to_response(RateLimitError(decision.message, retry_after=retry, tokens=tokens), headers)(
                scope, receive, send
            )
            return
        raw = [(name.encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(raw)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            usage = current_usage.get()
            used = Cost(1, usage.input_tokens, usage.output_tokens) if usage is not None else None
            try:
                if not self.limiter.release(key, decision, cost, used, time.time(), wait=False):
                    await run_in_threadpool(self.limiter.release, key, decision, cost, used, time.time())
            except Exception:  # the answer is sent: the lease expires, the estimate stays charged
                log.exception("could not settle the rate limits of key %s", key.id)

    async def _admit(self, key: ApiKey, payload: Any, size: int, path: str) -> tuple[Cost, Decision]:
        """The request's estimated cost and the limiter's decision. A small body's is
        worked out on the loop when the store can step at once; otherwise on a thread (a
        long prompt's tokens, a store that is busy or across the network)."""
        if size <= ON_LOOP_BYTES:
            cost = estimate_cost(payload, path, self.prompt_tokens, key.routing_profile)
            decision = self.limiter.try_acquire(key, cost, time.time())
            if decision is None:
                decision = await run_in_threadpool(lambda: self.limiter.acquire(key, cost, time.time()))
            return cost, decision

        def admit() -> tuple[Cost, Decision]:
            cost = estimate_cost(payload, path, self.prompt_tokens, key.routing_profile)
            return cost, self.limiter.acquire(key, cost, time.time())

        return await run_in_threadpool(admit)


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the key's tightest requests and tokens limits."""
    headers: dict[str, str] = {}
    for name, state in zip(("requests", "tokens"), decision.header_states(), strict=True):
        if state is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(state.limit.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{name}"] = reset_text(state.reset_s)
    return headers


async def _body(receive: Any) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # the route answers 400; the request is counted as one, without tokens


def _replay(body: bytes, receive: Any) -> Any:
    delivered = False

    async def replay() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


B = TypeVar("B", wire.Batch, wire.BatchList)


def show_pacing(store: Store, shown: B) -> B:
    """The batch (or page of batches) with `rate_limited_until` and `pacing` filled in for
    those whose lines wait for their key's rate limits now (core/pacing.py)."""
    batches = shown.data if isinstance(shown, wire.BatchList) else [shown]
    running = [b.id for b in batches if b.status == "in_progress"]
    notes = store.batch_pacing(running) if running else {}
    now = time.time()
    for batch in batches:
        if (note := notes.get(batch.id)) is not None and note[0] > now:
            batch.rate_limited_until, batch.pacing = math.ceil(note[0]), note[1]
    return shown
