"""The transport-agnostic core shared by `Client` and `AsyncClient`.

Every SDK method is written once, as a generator that yields *effects* — `Send` one HTTP
attempt, `Sleep`, or `Emit` a value to the caller — and receives their results. The
retry policy, error mapping, polling and chunked-job logic therefore exist once; the
sync and async clients differ only in the two small drivers at the end of this module,
which perform the effects with `httpx.Client` / `time.sleep` or `httpx.AsyncClient` /
`asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from batchgate.sdk.errors import APIConnectionError, error_from_response

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# statuses at which the server has refused a request before acting on it, so even a request
# that creates something can be sent again without creating it twice
REFUSED_STATUSES = frozenset({429, 503})
MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 60.0
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class Call:
    """One HTTP request as the SDK describes it, before any transport sends it.

    `idempotent=False` marks a request that creates something (a batch, a file, a prompt):
    see `request` for when those are retried. `file` is the multipart file part as
    (filename, path or bytes); a path is reopened for each attempt. With `sink`, a 2xx body
    is streamed into that file (written to a temporary file, then renamed into place) and
    `on_bytes` is called with each chunk's size.
    """

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    file: tuple[str, Path | bytes] | None = None
    idempotent: bool = True
    sink: Path | None = None
    on_bytes: Callable[[int], None] | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Send:
    """Effect: one attempt at `call`; answers the `httpx.Response` (body read), or raises
    the transport's exception into the generator."""

    call: Call


@dataclass(frozen=True)
class Sleep:
    """Effect: wait `seconds`."""

    seconds: float


@dataclass(frozen=True)
class Emit:
    """Effect: hand `value` to the caller of an iterating method."""

    value: Any


Effect = Send | Sleep | Emit
Op = Generator[Effect, Any, T]


def request(call: Call, max_retries: int) -> Op[httpx.Response]:
    """Send `call`, retrying transient failures; the 2xx response, else a `BatchgateError`.

    Retried, up to `max_retries` times with exponential backoff and jitter: 429 (after its
    `Retry-After`), 5xx, and failures to connect or to read the response. A request that
    creates something (`idempotent=False`) is retried only when the server provably did not
    act on it: the connection was never established (nothing was sent), or the server
    answered 429 or 503, which batchgate sends before touching any state (rate limiting,
    not ready). A 500 or a connection lost after the request went out may have created the
    object already, so sending it again could create a duplicate batch or file: that
    failure is raised instead, for the caller to check (e.g. by listing batches).
    """
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield Send(call)
        except httpx.TransportError as exc:
            if attempt >= max_retries or not (call.idempotent or _not_sent(exc)):
                raise APIConnectionError(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc
            delay = backoff(attempt)
        else:
            if response.is_success:
                return response
            status = response.status_code
            retryable = status in (RETRY_STATUSES if call.idempotent else REFUSED_STATUSES)
            if attempt >= max_retries or not retryable:
                raise error_from_response(response)
            delay = retry_after(response) or backoff(attempt)
        attempt += 1
        yield Sleep(delay)


def request_json(call: Call, max_retries: int) -> Op[Any]:
    response = yield from request(call, max_retries)
    return response.json()


def _not_sent(exc: httpx.TransportError) -> bool:
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.5 s, 1 s, 2 s, … capped at 8 s, each
    scaled by a random factor in [0.5, 1) so that many clients do not retry in step."""
    return min(MAX_BACKOFF, 0.5 * 2**attempt) * (0.5 + random.random() / 2)


def retry_after(response: httpx.Response) -> float | None:
    """The response's `Retry-After` in seconds (delta-seconds or an HTTP date), capped at 60."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


# ---- performing effects ------------------------------------------------------------------


class _Sink:
    """A download target: bytes go to a temporary file beside `path`, renamed into place
    only once complete, so an interrupted download never leaves a truncated file."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None] | None):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        self.path, self.tmp, self.on_bytes = path, Path(tmp), on_bytes
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        if self.on_bytes is not None:
            self.on_bytes(len(chunk))

    def commit(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _build(http: httpx.Client | httpx.AsyncClient, call: Call, stack: contextlib.ExitStack) -> httpx.Request:
    files = None
    if call.file is not None:
        name, source = call.file
        content = source if isinstance(source, bytes) else stack.enter_context(open(source, "rb"))  # noqa: SIM115
        files = {"file": (name, content)}
    return http.build_request(
        call.method, call.path, params=call.params, json=call.json, data=call.data, files=files, headers=call.headers
    )


class SyncDriver:
    """Performs effects with an `httpx.Client`."""

    def __init__(self, http: httpx.Client):
        self.http = http

    def send(self, call: Call) -> httpx.Response:
        with contextlib.ExitStack() as stack:
            response = self.http.send(_build(self.http, call, stack), stream=True)
            try:
                if call.sink is None or not response.is_success:
                    response.read()
                    return response
                sink = _Sink(call.sink, call.on_bytes)
                try:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        sink.write(chunk)
                except BaseException:
                    sink.abort()
                    raise
                sink.commit()
                return response
            finally:
                response.close()

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Send):
            return self.send(effect.call)
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        raise TypeError(f"{effect!r} is not allowed here")

    def run(self, op: Op[T]) -> T:
        """Drive `op` to its return value."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = op.throw(error) if error is not None else op.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = self._perform(effect)
            except Exception as exc:
                error = exc

    def iterate(self, op: Op[None]) -> Iterator[Any]:
        """Drive `op`, yielding what it emits."""
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = op.throw(error) if error is not None else op.send(value)
                except StopIteration:
                    return
                value, error = None, None
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    value = self._perform(effect)
                except Exception as exc:
                    error = exc
        finally:
            op.close()


class AsyncDriver:
    """Performs effects with an `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http

    async def send(self, call: Call) -> httpx.Response:
        with contextlib.ExitStack() as stack:
            response = await self.http.send(_build(self.http, call, stack), stream=True)
            try:
                if call.sink is None or not response.is_success:
                    await response.aread()
                    return response
                sink = _Sink(call.sink, call.on_bytes)
                try:
                    async for chunk in response.aiter_bytes(CHUNK_BYTES):
                        sink.write(chunk)
                except BaseException:
                    sink.abort()
                    raise
                sink.commit()
                return response
            finally:
                await response.aclose()

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Send):
            return await self.send(effect.call)
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        raise TypeError(f"{effect!r} is not allowed here")

    async def run(self, op: Op[T]) -> T:
        """Drive `op` to its return value."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = op.throw(error) if error is not None else op.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = await self._perform(effect)
            except Exception as exc:
                error = exc

    async def iterate(self, op: Op[None]) -> AsyncIterator[Any]:
        """Drive `op`, yielding what it emits."""
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = op.throw(error) if error is not None else op.send(value)
                except StopIteration:
                    return
                value, error = None, None
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    value = await self._perform(effect)
                except Exception as exc:
                    error = exc
        finally:
            op.close()
