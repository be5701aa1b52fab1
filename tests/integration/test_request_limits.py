"""Request heads and JSON bodies are bounded, on a real server process over raw sockets
(issue 11, defects 1 and 2)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
from support import Server

from batchgate.protocol.errors import ErrorDetail


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def _health_seconds(server: Server) -> float:
    started = time.perf_counter()
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    return time.perf_counter() - started


def test_an_oversize_header_gets_431_and_the_connection_closes(server: Server) -> None:
    with _connect(server) as sock:
        # 100 KB of one header, never finished: the server must answer without waiting for the end
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_header_too_large"
    assert "65536" in error["message"]
    assert list(error) == list(ErrorDetail.model_fields)  # the error body every route answers


def test_a_header_just_under_the_limit_is_served(server: Server) -> None:
    r = httpx.get(server.url + "/health", headers={"X-Padding": "a" * 60_000})
    assert r.status_code == 200


def test_parallel_huge_headers_neither_stall_health_nor_grow_memory(server: Server) -> None:
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    rss_before = process.memory_info().rss
    outcomes: list[bytes | str] = []

    def send_huge_header() -> None:
        with _connect(server) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000_000 + b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                outcomes.append("closed while sending")  # refused before it was all sent
                return
            outcomes.append(_read_response(sock))

    senders = [threading.Thread(target=send_huge_header) for _ in range(4)]
    for t in senders:
        t.start()
    slowest = max(_health_seconds(server) for _ in range(10))
    for t in senders:
        t.join(30)
    assert len(outcomes) == 4
    assert all(o == "closed while sending" or o.startswith(b"HTTP/1.1 431 ") or o == b"" for o in outcomes), outcomes
    assert slowest < 3.0
    assert process.memory_info().rss - rss_before < 50_000_000  # 4 x 20 MB sent, none of it kept
    assert _health_seconds(server) < 3.0


def test_slow_headers_are_cut_off(start_server: Callable[..., Server]) -> None:
    server = start_server({"BATCHGATE_HEADER_TIMEOUT": "1"})
    lorises = [_connect(server) for _ in range(50)]
    started = time.monotonic()
    try:
        for sock in lorises:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        # a byte every 0.2 s keeps every connection busy but never finishes its headers
        for _ in range(5):
            for sock in lorises:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(b"X")
            assert _health_seconds(server) < 3.0
            time.sleep(0.2)
        for sock in lorises:
            sock.settimeout(2)  # by now the server has had its second; it must not wait for more
        answers = [_read_response(sock) for sock in lorises]
    finally:
        for sock in lorises:
            sock.close()
    assert time.monotonic() - started < 10
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}


def test_a_silent_connection_is_closed(start_server: Callable[..., Server]) -> None:
    server = start_server({"BATCHGATE_HEADER_TIMEOUT": "1"})
    with _connect(server) as sock:
        started = time.monotonic()
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 6  # 1 s limit, generous for a loaded machine


def test_keep_alive_requests_still_work(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200


def test_keep_alive_then_slow_second_request_is_cut_off(start_server: Callable[..., Server]) -> None:
    server = start_server({"BATCHGATE_HEADER_TIMEOUT": "1"})
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        answer = _read_response(sock)
    # uvicorn's own keep-alive timer is disarmed by the first byte; ours is not
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 6  # 1 s limit, generous for a loaded machine


# --- JSON bodies (defect 2) -------------------------------------------------------------


def _small_body_limits(start_server: Callable[..., Server]) -> tuple[Server, str]:
    server = start_server({"BATCHGATE_MAX_JSON_BYTES": "4096", "BATCHGATE_MAX_BATCH_JSON_BYTES": "65536"})
    return server, server.create_key("limits")


def _head_only(server: Server, request_head: bytes) -> bytes:
    """Send a request head that promises a body, send none of it, and read the answer:
    a server that waits for the body never answers (the read times out)."""
    with _connect(server) as sock:
        sock.settimeout(5)
        sock.sendall(request_head)
        return _read_response(sock)


def _error(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def test_no_key_is_refused_before_the_body_is_read(server: Server) -> None:
    for path in ("/v1/batches", "/v1/chat/completions", "/api/batches", "/v1/files", "/v1/prompts"):
        answer = _head_only(
            server,
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400000000\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 401 "), (path, answer[:100])
        assert _error(answer)["code"] == "invalid_api_key"


def test_a_declared_oversize_body_is_refused_before_it_is_read(start_server: Callable[..., Server]) -> None:
    server, key = _small_body_limits(start_server)
    for path, limit in (("/v1/chat/completions", 4096), ("/v1/batches", 4096), ("/api/batches", 65536)):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n"
        )
        answer = _head_only(server, head.encode())
        assert answer.startswith(b"HTTP/1.1 413 "), (path, answer[:100])
        error = _error(answer)
        assert error["code"] == "request_too_large" and str(limit) in error["message"]


def test_a_chunked_oversize_body_is_refused_while_it_streams(start_server: Callable[..., Server]) -> None:
    server, key = _small_body_limits(start_server)
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    rss_before = process.memory_info().rss
    sent = 0

    def endless() -> Iterator[bytes]:  # a JSON document that never ends, sent chunked
        nonlocal sent
        yield b'{"model": "test-model", "messages": [{"role": "user", "content": "'
        while sent < 200_000_000:
            sent += 1 << 20
            yield b"a" * (1 << 20)

    try:
        r = httpx.post(
            server.url + "/v1/chat/completions",
            content=endless(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    except httpx.TransportError:
        pass  # the server answered and closed while the client was still sending: also refused
    assert sent < 50_000_000  # the server stopped reading long before the end
    assert process.memory_info().rss - rss_before < 50_000_000
    assert _health_seconds(server) < 3.0


def test_bodies_under_the_limits_are_served(start_server: Callable[..., Server]) -> None:
    server, key = _small_body_limits(start_server)
    headers = {"Authorization": f"Bearer {key}"}
    chat = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(server.url + "/v1/chat/completions", json=chat, headers=headers)
    assert r.status_code == 200, r.text
    # over the JSON limit, under the batch one: only /api/batches takes it
    items = [{"content": "a review " * 30} for _ in range(20)]
    r = httpx.post(server.url + "/v1/chat/completions", json={**chat, "items": items}, headers=headers)
    assert r.status_code == 413
    r = httpx.post(server.url + "/api/batches", json={"operation": "summarize", "items": items}, headers=headers)
    assert r.status_code == 200, r.text


def test_openapi_declares_the_api_key(server: Server) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= next(iter(schemes.values())).items()
    create_batch = document["paths"]["/v1/batches"]["post"]
    assert create_batch["security"]
    assert "security" not in document["paths"]["/health"]["get"]
