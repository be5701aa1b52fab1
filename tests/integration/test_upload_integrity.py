"""Uploads are stored exactly or refused, on a real server (issue 11, defects 4 and 7):
a multipart body cut short, one that does not match its boundary, or a part with a
huge filename is a 400 naming the parameter, and nothing is registered or left on disk."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from support import Server, chat_line, jsonl

BOUNDARY = "bg-test-boundary"
LINES = jsonl([chat_line(f"r{i}") for i in range(10)])


def _multipart(content: bytes, filename: str = "input.jsonl", boundary: str = BOUNDARY) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _post(server: Server, key: str, body: bytes, boundary: str = BOUNDARY, path: str = "/v1/files") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return httpx.post(server.url + path, content=body, headers=headers, timeout=30)


def _assert_nothing_kept(server: Server, key: str) -> None:
    listed = httpx.get(server.url + "/v1/files", headers={"Authorization": f"Bearer {key}"}).json()
    assert listed["data"] == []
    assert list((server.data_dir / "files").iterdir()) == []


@pytest.fixture
def key(server: Server) -> str:
    return server.create_key("uploads")


def test_a_complete_upload_is_stored_exactly(server: Server, key: str) -> None:
    r = _post(server, key, _multipart(LINES))
    assert r.status_code == 200, r.text
    content = httpx.get(server.url + f"/v1/files/{r.json()['id']}/content", headers={"Authorization": f"Bearer {key}"})
    assert content.content == LINES


@pytest.mark.parametrize("path", ["/v1/files", "/api/files"])
def test_a_body_without_its_closing_boundary_is_refused(server: Server, key: str, path: str) -> None:
    whole = _multipart(LINES)
    cut = whole[: whole.index(b"\n", len(whole) // 2) + 1]  # ends after line 6 or so, no boundary
    r = _post(server, key, cut, path=path)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "file" and "closing boundary" in error["message"]
    _assert_nothing_kept(server, key)


def test_a_body_that_does_not_match_its_boundary_is_refused(server: Server, key: str) -> None:
    r = _post(server, key, _multipart(LINES, boundary="another-boundary"))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "file"
    r = _post(server, key, b"this is not multipart at all\r\n" * 10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "file"
    _assert_nothing_kept(server, key)


def test_a_huge_filename_is_refused(server: Server, key: str) -> None:
    r = _post(server, key, _multipart(LINES, filename="a" * 1_000_000))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "file" and "header size" in error["message"]
    r = _post(server, key, _multipart(LINES, filename="b" * 256))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "file" and "255 characters" in r.json()["error"]["message"]
    r = _post(server, key, _multipart(LINES, filename="c" * 255))
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "c" * 255


def test_a_client_that_disconnects_mid_upload_leaves_nothing(server: Server, key: str) -> None:
    body = _multipart(LINES)
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
    # the server sees the disconnect and discards what it had; wait until it has
    for _ in range(100):
        if not list((server.data_dir / "files").iterdir()):
            break
        time.sleep(0.05)
    _assert_nothing_kept(server, key)
