"""A minimal, fast OpenAI-compatible upstream for the benchmarks (not a test fake).

Answers instantly (or after --latency-ms) with a fixed completion, so a benchmark that
puts it behind a client or a gateway measures the client or the gateway, not the model:

  POST /v1/chat/completions  content "ok", finish_reason "stop", `model` echoed, usage
                             (prompt tokens estimated at 4 characters a token, 1 completion token)
  POST /v1/completions       text "ok", same usage
  POST /v1/embeddings        one unit vector of EMBEDDING_DIM floats per input; float or base64
  GET  /v1/models            the --models list
  GET  /_stats               requests served per path (benchmarks check that work reached it),
                             and with a capacity: rejected (429s sent) and peak_concurrency

Capacity (for the scheduling benchmarks): `--max-concurrent C` serves C requests at a time
(each takes --latency-ms; the others queue, as a GPU server's batch slots do);
`--reject-above N` answers 429 at once to a request arriving while N are in service (an
upstream that rate-limits by concurrency), with `Retry-After: --retry-after` if given.

A raw asyncio HTTP/1.1 server (asyncio.Protocol, uvloop when importable; keep-alive,
pipelining, Content-Length bodies only): no framework, so one core answers tens of
thousands of requests a second. Streaming (`"stream": true`) is refused with a 400.

Run: `python bench/mock_upstream.py --port 8765` (prints "ready" once listening), or from
a benchmark: `with run_mock() as mock: ... mock.base_url ...` (a child process, stopped
in `finally`, SIGTERM'd if the benchmark dies).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import select
import signal
import struct
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # the mock also runs on a bare interpreter
    import json

    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


HOST = "127.0.0.1"
EMBEDDING_DIM = 16
_VECTOR = [EMBEDDING_DIM**-0.5] * EMBEDDING_DIM  # unit norm, like real embedding models
_VECTOR_B64 = base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *_VECTOR)).decode()
_MAX_HEAD = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    405: "Method Not Allowed",
    411: "Length Required",
    431: "Request Header Fields Too Large",
}


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


class Responder:
    """Builds the answer for one request; counts what it served."""

    def __init__(self, models: list[str]):
        self.models = models
        self.capacity: Capacity | None = None
        self.counts: Counter[str] = Counter()
        self._seq = 0

    def answer(self, method: bytes, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == b"GET":
            if path == "/v1/models":
                self.counts[path] += 1
                data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "mock"} for m in self.models]
                return 200, {"object": "list", "data": data}
            if path == "/_stats":
                stats: dict[str, Any] = {"requests": dict(self.counts)}
                if self.capacity is not None:
                    stats |= {"rejected": self.capacity.rejected, "peak_concurrency": self.capacity.peak}
                return 200, stats
            return _error(404, f"no route GET {path}")
        if method != b"POST":
            return _error(405, f"method {method.decode(errors='replace')} not allowed")
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completion,
            "/v1/embeddings": self._embeddings,
        }.get(path)
        if handler is None:
            return _error(404, f"no route POST {path}")
        try:
            req = _loads(body)
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(req, dict):
            return _error(400, "request body must be a JSON object")
        if req.get("stream"):
            return _error(400, "the mock upstream does not stream")
        self.counts[path] += 1
        self._seq += 1
        return 200, handler(req)

    def _chat(self, req: dict[str, Any]) -> dict[str, Any]:
        messages = req.get("messages") or []
        prompt = sum(_tokens(_text_of(m.get("content"))) + 3 for m in messages if isinstance(m, dict))
        return {
            "id": f"chatcmpl-mock{self._seq:012d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(prompt, 1),
            "system_fingerprint": "mock",
        }

    def _completion(self, req: dict[str, Any]) -> dict[str, Any]:
        prompt = req.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(p for p in prompt if isinstance(p, str))
        return {
            "id": f"cmpl-mock{self._seq:012d}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.get("model", ""),
            "choices": [{"index": 0, "text": "ok", "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(_tokens(text), 1),
        }

    def _embeddings(self, req: dict[str, Any]) -> dict[str, Any]:
        inp = req.get("input", "")
        # a string, a list of strings, a token array, or a list of token arrays
        inputs = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
        tokens = sum(len(x) if isinstance(x, list) else _tokens(str(x)) for x in inputs)
        vector: Any = _VECTOR_B64 if req.get("encoding_format") == "base64" else _VECTOR
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(inputs))],
            "model": req.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


class Capacity:
    """How many requests are in service at once: at most `max_concurrent` (the rest wait
    in arrival order); from `reject_above` on, a request is answered 429 at once."""

    def __init__(self, delay: float, max_concurrent: int | None, reject_above: int | None, retry_after: str | None):
        self.delay = delay
        self.max_concurrent = max_concurrent
        self.reject_above = reject_above
        self.retry_after = retry_after
        self.active = 0
        self.peak = 0
        self.rejected = 0
        self.queue: deque[Callable[[], None]] = deque()

    def rejects(self) -> bool:
        """Whether a request arriving now is answered 429 (counted)."""
        if self.reject_above is not None and self.active >= self.reject_above:
            self.rejected += 1
            return True
        return False

    def admit(self, send: Callable[[], None]) -> None:
        """Call `send` after the delay, once a place is free."""
        if self.max_concurrent is not None and self.active >= self.max_concurrent:
            self.queue.append(send)
        else:
            self._start(send)

    def _start(self, send: Callable[[], None]) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        asyncio.get_running_loop().call_later(self.delay, self._done, send)

    def _done(self, send: Callable[[], None]) -> None:
        self.active -= 1
        send()
        if self.queue:
            self._start(self.queue.popleft())


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 on one connection: requests parsed in order from the byte stream."""

    def __init__(self, responder: Responder, delay: float, capacity: Capacity | None = None):
        self.responder = responder
        self.delay = delay
        self.capacity = capacity
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.closing:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._send(*_error(431, "request head too large"), close=True)
                return
            head = bytes(self.buf[:end]).split(b"\r\n")
            parts = head[0].split(b" ")
            if len(parts) != 3:
                self._send(*_error(400, "bad request line"), close=True)
                return
            method, target, version = parts
            length, keep_alive, chunked = 0, version == b"HTTP/1.1", False
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length" and value.isdigit():
                    length = int(value)
                elif name == b"connection" and value in (b"close", b"keep-alive"):
                    keep_alive = value == b"keep-alive"
                elif name == b"transfer-encoding":
                    chunked = True
            if chunked:
                self._send(*_error(411, "send a Content-Length body"), close=True)
                return
            start = end + 4
            if len(self.buf) < start + length:
                return  # the body has not all arrived
            body = bytes(self.buf[start : start + length])
            del self.buf[: start + length]
            path = target.split(b"?", 1)[0].decode()
            if self.capacity is not None and method == b"POST":
                self._limited(method, path, body, not keep_alive)
            else:
                status, payload = self.responder.answer(method, path, body)
                if self.delay > 0:
                    asyncio.get_running_loop().call_later(self.delay, self._send, status, payload, not keep_alive)
                else:
                    self._send(status, payload, not keep_alive)
            if not keep_alive:
                self.closing = True

    def _limited(self, method: bytes, path: str, body: bytes, close: bool) -> None:
        assert self.capacity is not None
        if self.capacity.rejects():
            retry = f"retry-after: {self.capacity.retry_after}\r\n" if self.capacity.retry_after else ""
            message = f"more than {self.capacity.reject_above} requests at once"
            status, payload = _error(429, message)
            payload["error"].update(type="requests", code="rate_limit_exceeded")
            self._send(status, payload, close, retry)
            return
        status, payload = self.responder.answer(method, path, body)
        self.capacity.admit(functools.partial(self._send, status, payload, close))

    def _send(self, status: int, payload: dict[str, Any], close: bool = False, extra_head: str = "") -> None:
        if self.transport is None:
            return
        body = _dumps(payload)
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n{extra_head}"
            f"content-length: {len(body)}\r\n{'connection: close' if close else 'connection: keep-alive'}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if close:
            self.closing = True
            self.transport.close()


async def serve(
    port: int,
    models: list[str],
    latency_ms: float,
    capacity: tuple[int | None, int | None, str | None] = (None,) * 3,
    host: str = HOST,
) -> None:
    """Listen on host:port until SIGTERM or SIGINT; prints "ready" once listening.
    `capacity`: (max concurrent, reject above, Retry-After), see `Capacity`."""
    loop = asyncio.get_running_loop()
    responder = Responder(models)
    if capacity != (None, None, None):
        responder.capacity = Capacity(latency_ms / 1000, *capacity)
    server = await loop.create_server(
        lambda: HttpProtocol(responder, latency_ms / 1000, responder.capacity), host, port, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    print(f"mock upstream on http://{host}:{port}/v1 (models: {', '.join(models)})", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="port to listen on")
    p.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST})")
    p.add_argument("--models", default="mock-model", help="comma-separated ids listed by GET /v1/models")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer (default 0)")
    p.add_argument("--max-concurrent", type=int, help="serve this many requests at a time; the rest queue")
    p.add_argument("--reject-above", type=int, help="answer 429 to a request arriving while this many are served")
    p.add_argument("--retry-after", help="the Retry-After of those 429s (seconds; default: none)")
    args = p.parse_args(argv)
    capacity = (args.max_concurrent, args.reject_above, args.retry_after)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(args.port, args.models.split(","), args.latency_ms, capacity, args.host))


# ---- from a benchmark -------------------------------------------------------------


@dataclass
class MockUpstream:
    base_url: str  # ends in /v1, what an OpenAI client takes as base_url
    port: int
    pid: int
    log_path: Path

    def stats(self) -> Counter[str]:
        """Requests served so far, per path."""
        return Counter(self.raw_stats()["requests"])

    def raw_stats(self) -> dict[str, Any]:
        """GET /_stats: requests per path, and with a capacity rejected and peak_concurrency."""
        import httpx

        r = httpx.get(self.base_url.removesuffix("/v1") + "/_stats", timeout=10)
        r.raise_for_status()
        return cast(dict[str, Any], r.json())

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the mock has used so far."""
        import psutil

        t = psutil.Process(self.pid).cpu_times()
        return t.user + t.system


@contextmanager
def run_mock(
    name: str = "mock", models: str = "mock-model", latency_ms: float = 0.0, extra_args: tuple[str, ...] = ()
) -> Iterator[MockUpstream]:
    """The mock as a child process on a free 127.0.0.1 port, ready when this yields
    (`extra_args`: more of its command line, e.g. ("--max-concurrent", "8")).

    Same hygiene as `_common.run_server`: log in bench/out/<name>.log, SIGTERM if the
    benchmark dies, terminated (then killed after 10 s) in `finally`.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as bc

    bc.OUT_DIR.mkdir(parents=True, exist_ok=True)
    log_path = bc.OUT_DIR / f"{name}.log"
    port = bc._free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--models", models]
    cmd += ["--latency-ms", str(latency_ms), *extra_args]
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=bc._die_with_parent
            )
        assert proc.stdout is not None
        # the only thing it prints is "ready"; b"" means it died first
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"mock upstream not ready after 30 s or exited; see {log_path}")
        yield MockUpstream(f"http://{HOST}:{port}/v1", port, proc.pid, log_path)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc is not None and proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()


if __name__ == "__main__":
    main()
