"""The HTTP API on a real server process and a real SQLite store: errors, auth, limits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
from support import TERMINAL, Server, chat_line, jsonl, wait_for


def client(server: Server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url + "/v1", headers=headers, timeout=30)


def upload(c: httpx.Client, data: bytes, purpose: str = "batch") -> dict:
    r = c.post("/files", files={"file": ("in.jsonl", data)}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return r.json()


def create(c: httpx.Client, file_id: str, **extra: object) -> httpx.Response:
    return c.post(
        "/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra},
    )


def wait_terminal(c: httpx.Client, batch_id: str, timeout: float = 30) -> dict:
    return wait_for(lambda: (b := c.get(f"/batches/{batch_id}").json())["status"] in TERMINAL and b, timeout)


def assert_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param
    return error


def test_health_and_ready(server: Server) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready").json()
    assert ready == {"status": "ok", "checks": {"store": "ok", "storage": "ok", "worker": "ok"}}


def test_auth_is_required_and_keys_can_be_revoked(server: Server) -> None:
    assert_error(client(server, None).get("/files"), 401, "invalid_api_key")
    assert_error(client(server, "bg-wrong").get("/batches"), 401, "invalid_api_key")
    key = server.create_key("alpha")
    assert client(server, key).get("/files").status_code == 200
    key_id = subprocess.run(
        [sys.executable, "-m", "batchgate", "keys", "list", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"},
    ).stdout.split("key_")[1].split()[0]  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "batchgate", "keys", "revoke", "key_" + key_id, "--data-dir", str(server.data_dir)],
        check=True,
    )
    assert_error(client(server, key).get("/files"), 401)


def test_projects_are_isolated(server: Server) -> None:
    a, b = client(server, server.create_key("a")), client(server, server.create_key("b"))
    file = upload(a, jsonl([chat_line("x")]))
    batch = create(a, file["id"]).json()
    assert_error(b.get(f"/files/{file['id']}"), 404, param="file_id")
    assert_error(b.get(f"/files/{file['id']}/content"), 404)
    assert_error(b.delete(f"/files/{file['id']}"), 404)
    assert_error(b.get(f"/batches/{batch['id']}"), 404, param="batch_id")
    assert_error(b.post(f"/batches/{batch['id']}/cancel"), 404)
    assert_error(create(b, file["id"]), 404, param="input_file_id")
    assert b.get("/files").json()["data"] == [] and b.get("/batches").json()["data"] == []
    # paging after another project's id reads exactly as after an unknown id (issue 11 #9)
    create(b, upload(b, jsonl([chat_line("y")]))["id"])
    for path, theirs in (("/files", file["id"]), ("/batches", batch["id"])):
        unknown = b.get(path, params={"after": "id-unknown"}).json()
        assert unknown["data"] == [] and b.get(path, params={"after": theirs}).json() == unknown


def test_upload_errors(server: Server) -> None:
    c = client(server, server.create_key("p"))
    assert_error(c.post("/files", files={"file": ("a", b"x")}), 400, "missing_required_parameter", "purpose")
    assert_error(
        c.post("/files", files={"file": ("a", b"x")}, data={"purpose": "fine-tune"}), 400, "invalid_value", "purpose"
    )
    assert_error(c.post("/files", data={"purpose": "batch"}, files={"other": ("a", b"x")}), 400, param="file")
    assert_error(c.post("/files", content=b"raw"), 400, param="file")
    two_files = [("file", ("a", b"x")), ("file", ("b", b"y"))]
    assert_error(c.post("/files", data={"purpose": "batch"}, files=two_files), 400, param="file")
    assert c.get("/files").json()["data"] == []


def test_oversize_upload_is_refused_while_streaming(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_MAX_FILE_BYTES": "100000"})
    c = client(server, server.create_key("p"))
    # with a Content-Length: refused before the body is read
    assert_error(
        c.post("/files", files={"file": ("a", b"x" * 300_000)}, data={"purpose": "batch"}),
        413,
        "file_too_large",
        "file",
    )

    # chunked, no Content-Length: refused once the streamed bytes pass the limit
    boundary = "bgtest"

    def body():  # type: ignore[no-untyped-def]
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode()
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'.encode()
        for _ in range(50):
            yield b"y" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        r = c.post("/files", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert_error(r, 413, "file_too_large")
    except httpx.HTTPError:
        pass  # the server may close the connection before the client finished sending: also a refusal
    assert c.get("/files").json()["data"] == []
    assert not [p for p in (server.data_dir / "files").iterdir()], "no partial upload is kept"
    assert httpx.get(server.url + "/health").status_code == 200
    # a file under the limit still works
    assert upload(c, jsonl([chat_line("ok")]))["bytes"] > 0


def test_batch_create_errors(server: Server) -> None:
    c = client(server, server.create_key("p"))
    file_id = upload(c, jsonl([chat_line("x")]))["id"]
    assert_error(
        c.post("/batches", json={"endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        400,
        "missing_required_parameter",
        "input_file_id",
    )
    assert_error(create(c, file_id, endpoint="/v1/images"), 400, "invalid_value", "endpoint")
    assert_error(create(c, file_id, completion_window="soon"), 400, "invalid_value", "completion_window")
    assert_error(create(c, file_id, metadata={f"k{i}": "v" for i in range(17)}), 400, "invalid_value", "metadata")
    assert_error(create(c, file_id, metadata={"k": 1}), 400, "invalid_type", "metadata.k")
    assert_error(create(c, "file-nope"), 404, param="input_file_id")
    assert_error(
        c.post("/batches", content=b"{oops", headers={"content-type": "application/json"}), 400, "invalid_json"
    )
    assert_error(c.post("/batches", json=[1, 2]), 400, "invalid_type")
    assert_error(c.get("/batches/batch_nope"), 404)
    assert_error(c.get("/nowhere"), 404, "not_found")
    # an output file is not a valid input
    done = wait_terminal(c, create(c, file_id).json()["id"])
    assert_error(create(c, done["output_file_id"]), 400, "invalid_file_purpose", "input_file_id")
    assert_error(c.get("/files", params={"limit": 0}), 400, param="limit")
    assert_error(c.get("/files", params={"order": "sideways"}), 400, param="order")


def test_conflicts(server: Server) -> None:
    c = client(server, server.create_key("p"))
    file_id = upload(c, jsonl([chat_line(f"r{i}", mock={"sleep": 1}) for i in range(200)]))["id"]
    batch = create(c, file_id).json()
    assert_error(c.delete(f"/files/{file_id}"), 409, "file_in_use")
    c.post(f"/batches/{batch['id']}/cancel")
    assert wait_terminal(c, batch["id"])["status"] == "cancelled"
    assert_error(c.post(f"/batches/{batch['id']}/cancel"), 409, "batch_not_cancellable")
    assert c.delete(f"/files/{file_id}").json() == {"id": file_id, "object": "file", "deleted": True}
    assert_error(c.get(f"/files/{file_id}"), 404)


def test_validation_errors_through_the_api(server: Server) -> None:
    c = client(server, server.create_key("p"))
    rows = [
        chat_line("a"),
        b"{broken",
        {"custom_id": "c", "method": "PUT", "url": "/v1/chat/completions", "body": {"model": "m"}},
        {"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}},
        chat_line("a"),
        {"custom_id": "f", "method": "POST", "url": "/v1/chat/completions", "body": {}},
    ]
    batch = create(c, upload(c, jsonl(rows))["id"]).json()
    batch = wait_terminal(c, batch["id"])
    assert batch["status"] == "failed" and batch["failed_at"]
    data = batch["errors"]["data"]
    assert batch["errors"]["object"] == "list"
    assert [(e["line"], e["code"], e["param"]) for e in data] == [
        (2, "invalid_json", None),
        (3, "invalid_method", "method"),
        (4, "invalid_url", "url"),
        (5, "duplicate_custom_id", "custom_id"),
        (6, "missing_required_parameter", "body.model"),
    ]
    assert all(e["message"].startswith(f"Line {e['line']}:") for e in data)
    empty = wait_terminal(c, create(c, upload(c, b"")["id"]).json()["id"])
    assert empty["errors"]["data"][0]["code"] == "empty_file"


def test_limits_are_configurable(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_MAX_LINES": "3", "BATCHGATE_MAX_LINE_BYTES": "2000"})
    c = client(server, server.create_key("p"))
    too_many = wait_terminal(c, create(c, upload(c, jsonl([chat_line(f"r{i}") for i in range(4)]))["id"]).json()["id"])
    assert [(e["code"], e["line"]) for e in too_many["errors"]["data"]] == [("too_many_lines", 4)]
    too_long = wait_terminal(c, create(c, upload(c, jsonl([chat_line("big", "x" * 3000)]))["id"]).json()["id"])
    assert [(e["code"], e["line"]) for e in too_long["errors"]["data"]] == [("line_too_large", 1)]


def test_sigterm_drains_and_work_resumes(start_server: Callable[..., Server], tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(env={"BATCHGATE_DRAIN_TIMEOUT": "1", "BATCHGATE_CONCURRENCY": "4"})
    key = server.create_key("p")
    c = client(server, key)
    rows = [chat_line(f"r{i}", mock={"sleep": 0.3}) for i in range(30)]
    batch_id = create(c, upload(c, jsonl(rows))["id"]).json()["id"]
    wait_for(lambda: c.get(f"/batches/{batch_id}").json()["request_counts"]["completed"] >= 4)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, so the exit is by signal
    assert server.proc.wait(15) in (0, -signal.SIGTERM)
    log = server.log_path.read_text()
    assert "Application shutdown complete" in log and "stopped" in log
    restarted = start_server(env={"BATCHGATE_CONCURRENCY": "8"}, data_dir=server.data_dir)
    c = client(restarted, key)
    batch = wait_terminal(c, batch_id)
    assert batch["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
    out = c.get(f"/files/{batch['output_file_id']}/content").text.splitlines()
    assert sorted(line.split('"custom_id":"')[1].split('"')[0] for line in out) == sorted(f"r{i}" for i in range(30))


@pytest.mark.parametrize("workers", [1, 2])
def test_separate_worker_processes(start_server: Callable[..., Server], workers: int) -> None:
    server = start_server()
    server.stop()
    # API only, plus separate `batchgate worker` processes on the same data dir
    api = Server(server.data_dir, server.env)
    api.proc = subprocess.Popen(
        [sys.executable, "-m", "batchgate", "serve", "--no-worker", "--port", str(api.port), "--data-dir", str(api.data_dir)],
        env=api.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchgate", "worker", "--data-dir", str(api.data_dir)],
            env=api.env,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        wait_for(lambda: _up(api.url), 30)
        c = client(api, api.create_key("p"))
        rows = [chat_line(f"r{i}", mock={"sleep": 0.01}) for i in range(300)]
        batch = wait_terminal(c, create(c, upload(c, jsonl(rows))["id"]).json()["id"])
        assert batch["request_counts"] == {"total": 300, "completed": 300, "failed": 0}
        out = c.get(f"/files/{batch['output_file_id']}/content").text.splitlines()
        assert len(out) == 300 and len(set(out)) == 300
    finally:
        for p in [*procs, api.proc]:
            p.send_signal(signal.SIGTERM)
        for p in [*procs, api.proc]:
            p.wait(20)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
