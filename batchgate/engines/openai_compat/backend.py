"""A Backend for one OpenAI-compatible upstream (vLLM, llama.cpp server, Ollama, OpenAI,
another batchgate): pooled keep-alive HTTP, a concurrency cap, request and token rate
caps, connect and read timeouts, and retries.

Retries happen here, per upstream: 429, 5xx, timeouts, dropped connections and truncated
bodies are retried up to `max_retries` times with exponential backoff and jitter,
honouring `Retry-After` / `retry-after-ms`.

Concurrency: each attempt holds a slot of the upstream's `PriorityGate` (limits.py), not
the backoff between attempts. Interactive requests get free slots before batch lines;
the number of slots adapts (AIMD on 429, 503 and timeouts, within `max_concurrency`),
and an overload answer to an attempt sent above the limit as it now stands is sent
again without counting as an attempt: the gateway overloaded the upstream, not the line. Any other 4xx is final: it is raised as
BackendRejectedError carrying the upstream's answer, so a failed line keeps the
upstream's status and message and a synchronous caller gets its status (a 429 with its
Retry-After). When the retries run out, the last 429/5xx answer is raised the same way;
with no answer at all, UpstreamTimeoutError or UpstreamUnreachableError. None of these
are transient for the worker: the retrying was done here.

aiohttp rather than httpx: at 64 concurrent requests it served 15.8x the requests per
second of httpx on the same mock upstream (bench/http_clients.py, bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

from batchgate.core.errors import (
    BackendError,
    BackendRejectedError,
    UpstreamTimeoutError,
    UpstreamUnreachableError,
)
from batchgate.core.ports import BackendRequest, BackendResponse, StreamDelta
from batchgate.core.routing import UpstreamConfig
from batchgate.core.scheduling import UpstreamConcurrency
from batchgate.engines.openai_compat.limits import Permit, PriorityGate, RateLimit
from batchgate.protocol.errors import ErrorBody, ErrorDetail

log = logging.getLogger("batchgate.upstream")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
OVERLOAD_STATUSES = frozenset({429, 503})  # the upstream has more than it can take: fewer slots
BACKOFF_MAX = 30.0  # seconds; also the most a Retry-After is honoured
RESPONSES = "/v1/responses"
# the events that end an upstream's /v1/responses stream (the last holds the usage)
ENDING_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
DEFAULT_MAX_TOKENS = 256  # assumed output of a request without max_tokens, for the token cap


class UpstreamBackend:
    def __init__(self, config: UpstreamConfig, backoff_base: float = 0.5):
        self.name = config.name
        self.config = config
        self._backoff_base = backoff_base
        self.gate = PriorityGate(config.max_concurrency)
        self._requests = RateLimit(config.requests_per_minute) if config.requests_per_minute else None
        self._tokens = RateLimit(config.tokens_per_minute) if config.tokens_per_minute else None
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._headers = {"Content-Type": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    # ---- Backend ------------------------------------------------------------------

    async def execute(self, request: BackendRequest) -> BackendResponse:
        body = await self._post(request)
        usage = body.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        return BackendResponse(
            200,
            body,
            # chat/completions/embeddings count prompt and completion tokens; /v1/responses input and output
            int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
            int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
            model=body.get("model") or request.body.get("model"),
        )

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        if request.url == RESPONSES:
            async for delta in self._stream_events(request):
                yield delta
            return
        body = {**request.body, "stream": True, "stream_options": {"include_usage": True}}
        finish_reason, usage, chunks = None, None, 0
        response, permit = await self._post(replace(request, body=body), stream=True)
        try:
            async with response:
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = orjson.loads(data)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                        if text:
                            chunks += 1
                            yield StreamDelta(text)
                        finish_reason = choice.get("finish_reason") or finish_reason
        finally:
            permit.release()
        if usage is None:  # an upstream that ignores stream_options (llama.cpp's python server):
            usage = {"completion_tokens": chunks}  # servers stream a token per chunk
        tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        yield StreamDelta("", finish_reason or "stop", tokens_in, tokens_out)

    async def _stream_events(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        """The upstream's own /v1/responses stream (a model served natively): a delta per
        event as it wrote it, the text of `response.output_text.delta` events as the
        delta's text, and the usage of the final response on the last event. A stream that
        breaks off, or ends before that last event, raises UpstreamTimeoutError or
        UpstreamUnreachableError."""
        response, permit = await self._post(replace(request, body={**request.body, "stream": True}), stream=True)
        ended = False
        try:
            async with response:
                async for event in _sse_events(response.content):
                    kind = event["type"]
                    if kind not in ENDING_EVENTS:
                        text = event.get("delta") if kind == "response.output_text.delta" else None
                        yield StreamDelta(text if isinstance(text, str) else "", event=event)
                        continue
                    ended = True
                    answer = event.get("response")
                    usage = (answer.get("usage") if isinstance(answer, dict) else None) or {}
                    status = answer.get("status") if isinstance(answer, dict) else None
                    tokens_in, tokens_out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
                    yield StreamDelta("", str(status or kind), tokens_in, tokens_out, event=event)
                    break
        except (TimeoutError, aiohttp.ClientError) as exc:
            failure = _describe(exc)
            error: type[BackendError] = UpstreamTimeoutError if "timed out" in failure else UpstreamUnreachableError
            raise error(f"Upstream {self.name!r}: the stream broke off: {failure}.") from None
        finally:
            permit.release()
        if not ended:
            raise UpstreamUnreachableError(f"Upstream {self.name!r}: the stream ended before the response did.")

    def models(self) -> list[str]:
        return []  # the router lists the names the config maps to this upstream

    def concurrency(self) -> UpstreamConcurrency:
        """The adaptive concurrency now (core.scheduling.upstream_concurrency reads it)."""
        return self.gate.snapshot(self.name)

    async def aclose(self) -> None:
        current = asyncio.get_running_loop()
        for loop, session in list(self._sessions.items()):
            if loop is current:
                await session.close()
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(session.close(), loop)
        self._sessions.clear()

    # ---- HTTP ---------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        """One pooled session per event loop: an aiohttp session belongs to its loop."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.config.connect_timeout, sock_read=self.config.read_timeout
            )
            connector = aiohttp.TCPConnector(limit=self.config.max_concurrency, ttl_dns_cache=300)
            session = self._sessions[loop] = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return session

    def _url(self, path: str) -> str:
        return self.config.base_url + path.removeprefix("/v1")

    async def _wait_for_caps(self, request: BackendRequest, payload: bytes) -> None:
        if self._requests is not None:
            await self._requests.acquire()
        if self._tokens is not None:
            # the prompt is estimated at 4 bytes a token, the output at its max_tokens
            body = request.body
            output = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
            await self._tokens.acquire(len(payload) / 4 + int(output) * int(body.get("n") or 1))

    async def _post(self, request: BackendRequest, stream: bool = False) -> Any:
        """POST with retries, each attempt holding a slot of the gate. Returns the JSON
        body of a 200, or with `stream` the open response once the upstream starts
        answering and the `Permit` of its slot (release it when the stream ends). Raises
        BackendRejectedError for another 4xx, or the last 429/5xx once the retries ran
        out; UpstreamTimeoutError or UpstreamUnreachableError when the last attempt got no
        response (or a 200 whose body broke off or was not JSON)."""
        payload = orjson.dumps(request.body)
        headers = {**self._headers, "X-Batchgate-Custom-Id": request.custom_id}
        attempts = 0
        while True:
            attempts += 1
            await self._wait_for_caps(request, payload)
            failure, status, retry_after, raw = None, 0, None, b""
            permit = await self.gate.acquire(request.interactive, request.share)
            try:
                response = await self._session().post(self._url(request.url), data=payload, headers=headers)
                status = response.status
                retry_after = None if status == 200 else _retry_after(response.headers)
                if stream and status == 200:
                    self.gate.succeeded(permit)
                    return response, permit
                try:
                    raw = await response.read()
                finally:
                    response.release()
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = _describe(exc)
            except BaseException:
                permit.release()
                raise
            body = _json_body(raw) if failure is None else None
            if failure is None and status == 200 and body is None:
                failure = f"the response was not JSON ({len(raw)} bytes)"
            if not self._settle(permit, status, failure, retry_after):
                attempts -= 1  # sent above the limit as it now stands: again, at the lower limit
            last = attempts > self.config.max_retries
            if failure is None:
                if status == 200:
                    return body
                if status not in RETRY_STATUSES or last:
                    answer = BackendResponse(status, body or _error_body(status, raw), model=request.body.get("model"))
                    raise BackendRejectedError(answer, retry_after=retry_after)
            elif last:
                kind: type[BackendError] = UpstreamTimeoutError if "timed out" in failure else UpstreamUnreachableError
                raise kind(f"Upstream {self.name!r}: {failure} (after {attempts} attempts).")
            log.debug("upstream %s: %s; retry %d", self.name, failure or status, attempts)
            await asyncio.sleep(self._backoff(max(attempts, 1), retry_after))

    def _settle(self, permit: Permit, status: int, failure: str | None, retry_after: float | None) -> bool:
        """Give an attempt's slot back, telling the gate how it went. Whether the attempt
        counts (not an overload of the gateway's own making)."""
        counted = True
        if failure is None and status == 200:
            self.gate.succeeded(permit)
        elif status in OVERLOAD_STATUSES or (failure is not None and "timed out" in failure):
            counted = self.gate.overloaded(permit, retry_after)
        permit.release()
        return counted

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, BACKOFF_MAX)
        delay = min(BACKOFF_MAX, self._backoff_base * 2 ** (attempts - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter: retries of many lines spread apart


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The JSON data of each server-sent event, its `type` the `event:` name where the data
    has none; events whose data is not a JSON object (`[DONE]`) are left out. Read in
    chunks, not lines: a final response's event can be longer than aiohttp's line limit."""
    pending, event = bytearray(), _Event()
    async for chunk in content.iter_any():
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, rest = bytes(pending).split(b"\n")
        pending = bytearray(rest)
        for line in lines:
            if (data := event.line(line)) is not None:
                yield data
    for line in (bytes(pending), b""):  # the last line, and the end of the last event
        if (data := event.line(line)) is not None:
            yield data


class _Event:
    """A server-sent event as its lines arrive."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.data: list[bytes] = []

    def line(self, line: bytes) -> dict[str, Any] | None:
        """The event's data once a blank line ends it."""
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            self.data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            self.name = line[6:].strip().decode(errors="replace")
        elif not line:  # the end of the event
            event = _json_body(b"\n".join(self.data)) if self.data else None
            name, self.name, self.data = self.name, None, []
            if event is not None and isinstance(event.setdefault("type", name), str):
                return event
        return None


def _retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date)."""
    with contextlib.suppress(ValueError, TypeError):
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        with contextlib.suppress(TypeError, ValueError):
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _json_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _error_body(status: int, raw: bytes) -> dict[str, Any]:
    """An OpenAI error body for an upstream answer that was not one."""
    text = raw[:500].decode(errors="replace").strip() or f"HTTP {status}"
    detail = ErrorDetail(message=f"Upstream answered {status}: {text}", type="upstream_error", code="upstream_error")
    return ErrorBody(error=detail).model_dump()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "the request timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
