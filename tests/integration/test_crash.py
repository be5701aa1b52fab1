"""kill -9 of the server at each phase of a batch: on restart nothing accepted is lost and
no result is duplicated (DESIGN.md invariants 1–3)."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from pgdb import new_database
from support import TERMINAL, Server, chat_line, jsonl, parse_jsonl, wait_for


@pytest.fixture(params=["sqlite", "postgres"])
def start_server(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Callable[..., Server]:
    """The servers of a test on SQLite in their data dir, or on a PostgreSQL database of
    the test's own (the data dir then holds only the files)."""
    database = {"BATCHGATE_DATABASE_URL": new_database()} if request.param == "postgres" else {}

    def start(env: dict[str, str] | None = None, **options: Any) -> Server:
        return start_server(env={**database, **(env or {})}, **options)

    return start


def submit(server: Server, key: str, rows: list) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=server.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    file_id = c.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    batch = c.post(
        "/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    )
    return c, batch.json()["id"]


def status_in_store(server: Server, batch_id: str) -> str:
    if url := server.env.get("BATCHGATE_DATABASE_URL"):
        with psycopg.connect(url) as pg:
            row = pg.execute("SELECT status FROM batches WHERE id = %s", (batch_id,)).fetchone()
            assert row is not None
            return str(row[0])
    with sqlite3.connect(server.data_dir / "batchgate.db") as db:
        return str(db.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()[0])


def finish_and_check(server: Server, key: str, batch_id: str, custom_ids: list[str], timeout: float = 120) -> dict:
    c = httpx.Client(base_url=server.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    batch = wait_for(lambda: (b := c.get(f"/batches/{batch_id}").json())["status"] in TERMINAL and b, timeout, 0.1)
    assert batch["status"] == "completed"
    out = parse_jsonl(c.get(f"/files/{batch['output_file_id']}/content").content) if batch["output_file_id"] else []
    err = parse_jsonl(c.get(f"/files/{batch['error_file_id']}/content").content) if batch["error_file_id"] else []
    seen = [r["custom_id"] for r in out + err]
    assert len(seen) == len(set(seen)), "no result is duplicated"
    assert sorted(seen) == sorted(custom_ids), "no accepted line is lost"
    counts = batch["request_counts"]
    assert counts == {"total": len(custom_ids), "completed": len(out), "failed": len(err)}
    assert metered_lines(server, batch_id) == len(out) + len(err), "every line metered once in the ledger"
    return batch


def metered_lines(server: Server, batch_id: str) -> int:
    """The batch's ledger rows (one per line is unique in the schema: none can be there twice)."""
    sql = "SELECT count(*) FROM ledger WHERE batch_id = "
    if url := server.env.get("BATCHGATE_DATABASE_URL"):
        with psycopg.connect(url) as pg:
            row = pg.execute(sql + "%s", (batch_id,)).fetchone()
            assert row is not None
            return int(row[0])
    with sqlite3.connect(server.data_dir / "batchgate.db") as db:
        return int(db.execute(sql + "?", (batch_id,)).fetchone()[0])


def test_kill_during_validating(start_server: Callable[..., Server]) -> None:
    server = start_server()
    key = server.create_key("p")
    ids = [f"v{i}" for i in range(200_000)]  # validation takes a few hundred ms
    _, batch_id = submit(server, key, [chat_line(i) for i in ids])
    time.sleep(0.08)
    assert status_in_store(server, batch_id) == "validating"
    assert server.proc is not None
    job_process = psutil.Process(server.proc.pid).children()  # validating right now
    assert job_process
    server.kill()
    # the job process dies with the server: it cannot go on writing a batch that the
    # restarted server validates again
    _, alive = psutil.wait_procs(job_process, timeout=5)
    assert not alive
    restarted = start_server(data_dir=server.data_dir)
    finish_and_check(restarted, key, batch_id, ids)


def test_kill_during_in_progress(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_CONCURRENCY": "16"})
    key = server.create_key("p")
    ids = [f"p{i}" for i in range(600)]
    c, batch_id = submit(server, key, [chat_line(i, mock={"sleep": 0.02}) for i in ids])
    wait_for(lambda: c.get(f"/batches/{batch_id}").json()["request_counts"]["completed"] >= 100)
    server.kill()
    assert status_in_store(server, batch_id) == "in_progress"
    restarted = start_server(data_dir=server.data_dir)
    finish_and_check(restarted, key, batch_id, ids)


def test_kill_during_finalizing(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_CONCURRENCY": "256"})
    key = server.create_key("p")
    for attempt in range(3):  # the finalizing window is short; try again if the kill missed it
        ids = [f"f{attempt}-{i}" for i in range(40_000)]
        c, batch_id = submit(server, key, [chat_line(i) for i in ids])
        url = f"/batches/{batch_id}"
        wait_for(lambda c=c, url=url: c.get(url).json()["status"] in ("finalizing", "completed"), 120, 0.002)
        server.kill()
        killed_in = status_in_store(server, batch_id)
        server = start_server(data_dir=server.data_dir, env={"BATCHGATE_CONCURRENCY": "256"})
        finish_and_check(server, key, batch_id, ids)
        if killed_in == "finalizing":
            return
    raise AssertionError("never caught the batch in finalizing")


def test_repeated_random_kills(start_server: Callable[..., Server]) -> None:
    rng = random.Random(7)
    server = start_server(env={"BATCHGATE_CONCURRENCY": "32"})
    key = server.create_key("p")
    ids = [f"k{i}" for i in range(3000)]
    rows = [chat_line(i, mock={"sleep": 0.01, **({"status": 500} if n % 97 == 0 else {})}) for n, i in enumerate(ids)]
    _, batch_id = submit(server, key, rows)
    phases = []
    for _ in range(6):
        time.sleep(rng.uniform(0.05, 0.8))
        server.kill()
        phases.append(status_in_store(server, batch_id))
        server = start_server(data_dir=server.data_dir, env={"BATCHGATE_CONCURRENCY": "32"})
        if phases[-1] in TERMINAL:
            break
    assert "in_progress" in phases, phases
    batch = finish_and_check(server, key, batch_id, ids)
    assert batch["request_counts"]["failed"] == len(range(0, 3000, 97))
