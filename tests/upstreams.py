"""Real upstream servers for tests of the openai_compat backend: a fault-injecting proxy and llama.cpp.

The upstream client's retries, timeouts and `Retry-After` handling can only be trusted if they are
exercised against real sockets: a mocked transport cannot produce a connection reset or a body cut
short mid-stream the way a network does. `FaultProxy` sits on 127.0.0.1 in front of any upstream and
injects those faults at seeded rates; `llama_server` runs llama-cpp-python's own OpenAI-compatible
server as a subprocess, so tests talk to a third-party implementation of the protocol, not our own
idea of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import EllipsisType
from typing import Self

import aiohttp
import httpx
from aiohttp import web
from multidict import CIMultiDict

CUSTOM_ID_HEADER = "X-Batchgate-Custom-Id"

# RFC 9110 §7.6.1 hop-by-hop headers, plus the ones the proxy must recompute for its own connection
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
# aiohttp writes its own; forwarding the upstream's would duplicate them
_RESPONSE_DROP = _HOP_BY_HOP | {"date", "server"}

FAULT_KINDS = ("429", "500", "503", "slow", "reset", "truncated")


@dataclass(frozen=True)
class Faults:
    """What share of requests get which fault; the rest pass through untouched.

    Rates are probabilities that must sum to at most 1. `max_per_key` caps how many faulted
    attempts one request key can get, so a retrying client is guaranteed to finish within
    `max_per_key + 1` attempts — this turns "eventually succeeds" into something a test can assert.
    `paths` limits faults to requests whose path starts with one of the prefixes (e.g. leave
    `/v1/models` alone while chat completions fail).
    """

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_slow: float = 0.0
    rate_reset: float = 0.0
    rate_truncated: float = 0.0
    retry_after: str | None = "0.1"  # the 429's Retry-After header value; None sends none
    slow_seconds: float = 5.0  # should exceed the client's read timeout in tests
    max_per_key: int | None = None
    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        rates = self.rates()
        for kind, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate_{kind} must be within [0, 1], got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {sum(rates.values())}, more than 1")

    def rates(self) -> dict[str, float]:
        return {f.name.removeprefix("rate_"): getattr(self, f.name) for f in fields(self) if f.name.startswith("rate_")}

    @classmethod
    def always(cls, kind: str, **kwargs: object) -> Faults:
        """Every request gets `kind` (one of FAULT_KINDS): the simplest way to provoke one fault."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        return cls(**{f"rate_{kind}": 1.0}, **kwargs)  # type: ignore[arg-type]


@dataclass
class ProxyRecord:
    """One request the proxy received. `status` is None while it is in flight, or when no response was sent."""

    method: str
    path: str
    key: str
    attempt: int  # 1 for the first request with this key, 2 for the first retry, …
    fault: str | None
    status: int | None = None


class BackgroundApp:
    """An aiohttp application served on a free 127.0.0.1 port by a thread with its own event loop.

    Tests are synchronous and the code under test may run in a subprocess, so the server cannot
    share the test's loop; a dedicated thread keeps it independent of whatever the test does.
    Use as a context manager, or call start()/stop().
    """

    def __init__(self, app: web.Application):
        self.app = app
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "not started"
        return self._loop

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> None:
        # bind the socket ourselves: port 0 then reading it back cannot race another test for the port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FaultProxy(BackgroundApp):
    """A reverse proxy in front of `upstream` that injects faults and records every request.

    Paths are mirrored: a request to `proxy.url + "/v1/chat/completions"` goes to
    `upstream + "/v1/chat/completions"`, so `proxy.url` replaces the upstream's base URL (callers
    append `/v1` as they would for the upstream). Bodies are buffered, not streamed: batch requests
    are small and a whole body is what the request key is computed from.

    Which fault an attempt gets is a pure function of (seed, key, attempt number), not of arrival
    order, so concurrent clients see the same faults run after run. Assign `proxy.faults` at any
    time to change the rates for the requests that arrive after.
    """

    def __init__(self, upstream: str, faults: Faults | None = None, seed: int = 0):
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_startup.append(self._open_session)
        app.on_shutdown.append(self._release_slow)
        app.on_cleanup.append(self._close_session)
        super().__init__(app)
        self.upstream = upstream.rstrip("/")
        self.faults = faults or Faults()
        self.seed = seed
        self._records: list[ProxyRecord] = []
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._stopping: asyncio.Event | None = None

    # -- what tests read ----------------------------------------------------------------------

    @property
    def records(self) -> list[ProxyRecord]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._records)

    def attempts_by_key(self) -> dict[str, int]:
        """How many times each request key reached the proxy (1 = never retried)."""
        return dict(Counter(r.key for r in self.records))

    def count(self, fault: str | EllipsisType | None = ..., *, key: str | None = None, path: str | None = None) -> int:
        """Requests received, optionally only those with `fault` (None: passed through), `key` or `path`."""
        return sum(
            1
            for r in self.records
            if (fault is ... or r.fault == fault) and (key is None or r.key == key) and (path is None or r.path == path)
        )

    def reset(self) -> None:
        """Forget the recorded requests (attempt numbers start again at 1)."""
        with self._lock:
            self._records.clear()

    # -- the server ---------------------------------------------------------------------------

    async def _open_session(self, app: web.Application) -> None:
        self._stopping = asyncio.Event()
        # no total timeout: a slow upstream (a CPU model) is the client's business to time out, not ours;
        # auto_decompress off so compressed bodies and their Content-Encoding pass through unchanged
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def _release_slow(self, app: web.Application) -> None:
        if self._stopping is not None:
            self._stopping.set()  # wake sleeping "slow" handlers so stop() does not wait them out

    async def _close_session(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def _choose(self, faults: Faults, key: str, attempt: int, path: str) -> str | None:
        if faults.paths is not None and not path.startswith(faults.paths):
            return None
        if faults.max_per_key is not None:
            with self._lock:
                faulted = sum(1 for r in self._records if r.key == key and r.fault is not None)
            if faulted >= faults.max_per_key:
                return None
        digest = hashlib.sha256(f"{self.seed}:{key}:{attempt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for kind, rate in faults.rates().items():
            if u < rate:
                return kind
            u -= rate
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = request.headers.get(CUSTOM_ID_HEADER) or hashlib.sha256(body).hexdigest()
        faults = self.faults  # one consistent view even if a test swaps it mid-request
        with self._lock:
            attempt = 1 + sum(1 for r in self._records if r.key == key)
        fault = self._choose(faults, key, attempt, request.path)
        record = ProxyRecord(request.method, request.path, key, attempt, fault)
        with self._lock:
            self._records.append(record)

        if fault in ("429", "500", "503"):
            status = int(fault)
            retry = {"Retry-After": faults.retry_after} if status == 429 and faults.retry_after is not None else {}
            record.status = status
            return web.json_response(_error_body(status), status=status, headers=retry)
        if fault == "reset":
            _abort_with_rst(request)
            return web.Response()  # never sent: aiohttp quietly drops writes to a closed connection
        if fault == "slow":
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), faults.slow_seconds)

        status, headers, payload = await self._forward(request, body)
        if fault == "truncated":
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = max(len(payload), 1)  # always more than the half written
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            record.status = status
            assert request.transport is not None
            request.transport.close()  # graceful FIN after the partial body is flushed
            return response
        record.status = status
        return web.Response(status=status, headers=headers, body=payload)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, CIMultiDict[str], bytes]:
        assert self._session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        url = self.upstream + request.rel_url.path_qs
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                out = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP)
                return upstream.status, out, payload
        except aiohttp.ClientError as e:
            # an unreachable upstream is a 502, as any reverse proxy would say, so tests can tell it apart
            out = CIMultiDict({"Content-Type": "application/json"})
            body_502 = _error_body(502, f"fault proxy could not reach the upstream: {e!r}")
            return 502, out, _json_bytes(body_502)


def _abort_with_rst(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashed upstream or a middlebox would."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _error_body(status: int, message: str | None = None) -> dict[str, object]:
    kinds = {
        429: ("Rate limit reached (injected by the fault proxy).", "requests", "rate_limit_exceeded"),
        500: ("The server had an error while processing your request (injected).", "server_error", None),
        502: ("Bad gateway.", "server_error", None),
        503: ("The server is overloaded or not ready yet (injected).", "server_error", None),
    }
    default, kind, code = kinds[status]
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- llama.cpp's own OpenAI-compatible server --------------------------------------------------


# llama-cpp-python 0.3.36's vendored ggml segfaults in ggml_backend_amx_mul_mat on this project's
# machines (Xeon advertising AMX_INT8) as soon as a batch of more than one token is decoded, i.e. on
# any real prompt. The server has no flag for it, so this launcher turns off the model's extra buffer
# types (AMX and repacked weights) before handing over to the server's own main().
_LAUNCHER = """
import sys
import llama_cpp.llama_cpp as bindings

_default_params = bindings.llama_model_default_params

def _without_extra_bufts():
    params = _default_params()
    params.use_extra_bufts = False
    return params

bindings.llama_model_default_params = _without_extra_bufts
from llama_cpp.server.__main__ import main

sys.argv[0] = "llama_cpp.server"
main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    model_path: Path | str,
    port: int | None = None,
    *,
    alias: str | None = None,
    n_ctx: int = 2048,
    timeout: float = 120.0,
    log_path: Path | None = None,
    extra_bufts: bool = False,
) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on 127.0.0.1 and yield its base URL (without /v1).

    `alias` sets the model name the server reports in /v1/models (by default it reports the model
    path as given). The server is started in its own session so that terminating it never signals
    the test runner, and it is killed if it ignores SIGTERM.

    By default the server runs with llama.cpp's extra CPU buffer types off (see `_LAUNCHER`);
    `extra_bufts=True` runs `python -m llama_cpp.server` exactly as shipped.
    """
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    launch = ["-m", "llama_cpp.server"] if extra_bufts else ["-c", _LAUNCHER]
    cmd = [
        sys.executable,
        *launch,
        "--model",
        str(model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
        "--n_threads_batch",
        "2",
        "--n_gpu_layers",
        "0",
        "--seed",
        "0",
        "--verbose",
        "False",
    ]
    if alias is not None:
        cmd += ["--model_alias", alias]
    owned_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"llama-server-{port}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_ready(proc, url, timeout, log_path)
        yield url
    finally:
        _terminate(proc)
        if owned_log:
            log_path.unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"llama_cpp.server not ready after {timeout}s:\n{_tail(log_path)}")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
