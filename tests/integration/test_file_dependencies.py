"""Files a batch needs stay while it needs them (issue 11 #5, #10), on a real server:
creating a batch and deleting its input file at once never both succeed, and an
operation batch's own files (its input, its hidden items.jsonl, its results) cannot be
deleted from under its output."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial

import httpx
import pytest
from support import Server, chat_line, jsonl


@pytest.fixture
def http(server: Server) -> httpx.Client:
    key = server.create_key("p")
    limits = httpx.Limits(max_connections=8)
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits)


def at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """The calls' answers, each sent from its own thread, all released together."""
    answers: list[httpx.Response | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        answers[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def test_creating_a_batch_and_deleting_its_input_never_both_succeed(http: httpx.Client) -> None:
    # lines that take a minute: a batch that won stays active, so its input stays needed
    content = jsonl([chat_line("a", mock={"sleep": 60})])
    outcomes: Counter[tuple[int, int]] = Counter()
    for _ in range(150):
        file_id = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", content)}).json()["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        create, delete = at_once(
            partial(http.post, "/v1/batches", json=body), partial(http.delete, f"/v1/files/{file_id}")
        )
        outcomes[(create.status_code, delete.status_code)] += 1
        if create.status_code == 200:  # the batch won: its file stays, the delete was refused
            assert delete.status_code == 409 and delete.json()["error"]["code"] == "file_in_use"
            assert http.get(f"/v1/files/{file_id}").status_code == 200
            http.post(f"/v1/batches/{create.json()['id']}/cancel")
        else:  # the delete won: no batch on a file that is gone
            assert (create.status_code, delete.status_code) == (404, 200), (create.text, delete.text)
            assert create.json()["error"]["param"] == "input_file_id"
    assert set(outcomes) <= {(200, 409), (404, 200)}, outcomes


def wait_until_ended(http: httpx.Client, batch_id: str) -> dict:
    deadline = time.time() + 60
    while (batch := http.get(f"/api/batches/{batch_id}").json())["status"] not in ("completed", "failed"):
        assert time.time() < deadline, batch
        time.sleep(0.05)
    return batch


def test_an_operation_batchs_files_cannot_be_deleted_from_under_its_output(http: httpx.Client) -> None:
    items = [{"content": f"item {i}"} for i in range(20)]
    created = http.post("/api/batches", json={"operation": "summarize", "items": items}).json()
    batch_id = created["batch_id"]
    wait_until_ended(http, batch_id)
    batch = http.get(f"/v1/batches/{batch_id}").json()
    files = {f["filename"]: f["id"] for f in http.get("/v1/files").json()["data"]}
    own = {
        "input": batch["input_file_id"],
        "items": files["items.jsonl"],
        "output": batch["output_file_id"],
    }
    for name, file_id in own.items():
        refused = http.delete(f"/v1/files/{file_id}")
        assert refused.status_code == 409, (name, refused.text)
        assert refused.json()["error"]["code"] == "file_in_use"
    output = http.get(f"/api/batches/{batch_id}/output", params={"format": "jsonl"})
    assert output.status_code == 200 and len(output.text.splitlines()) == len(items)
    # a file of the project no batch needs is deleted as ever
    spare = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("x.jsonl", b"{}\n")}).json()["id"]
    assert http.delete(f"/v1/files/{spare}").status_code == 200


def test_an_output_that_cannot_be_read_is_an_error_before_any_byte(server: Server, http: httpx.Client) -> None:
    batch_id = http.post("/api/batches", json={"operation": "summarize", "items": [{"content": "a"}]}).json()[
        "batch_id"
    ]
    wait_until_ended(http, batch_id)
    items_id = {f["filename"]: f["id"] for f in http.get("/v1/files").json()["data"]}["items.jsonl"]
    (server.data_dir / "files" / items_id).write_bytes(b"not json\n")  # damaged on disk
    for fmt in ("json", "jsonl", "csv"):
        # a new connection each: the server closes one after an unexpected error
        url, close = f"/api/batches/{batch_id}/output", {"Connection": "close"}
        with http.stream("GET", url, params={"format": fmt}, headers=close) as r:
            # answered as an error with its body, not a 200 that breaks off
            assert r.status_code == 500, fmt
            assert r.read() and r.json()["error"]["code"] == "internal_error"
