"""Metering on a real server (scripted backend, real SQLite): every synchronous model
request is one ledger row with its key, endpoint, usage, cost, status and error code;
every batch line one row, with the batch discount, so the ledger adds up to the output
file (after a kill -9 too: tests/integration/test_crash.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from support import TERMINAL, Server, chat_line, jsonl, parse_jsonl, wait_for

from batchgate.core.ledger import LedgerEntry, LedgerQuery
from batchgate.core.routing import LOCAL_PRICES
from batchgate.store import SQLiteStore

MODEL = "smollm2-135m"  # a local catalog name, so its default price applies (the scripted backend answers)


def ledger(server: Server, **filters: object) -> list[LedgerEntry]:
    store = SQLiteStore(server.data_dir / "batchgate.db")
    try:
        return store.list_ledger(LedgerQuery(limit=100_000, **filters)).data  # type: ignore[arg-type]
    finally:
        store.close()


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def price(input_tokens: int, output_tokens: int) -> float:
    per_input, per_output = LOCAL_PRICES[MODEL]
    return (input_tokens * per_input + output_tokens * per_output) / 1_000_000


def test_each_synchronous_request_is_one_ledger_row(server: Server) -> None:
    key_a, key_b = server.create_key("alpha"), server.create_key("beta")
    a, b = client(server, key_a), client(server, key_b)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
    answered = a.post("/v1/chat/completions", json=chat)
    assert answered.status_code == 200, answered.text
    with a.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as streamed:
        assert streamed.status_code == 200 and "[DONE]" in streamed.read().decode()
    assert b.post("/v1/embeddings", json={"model": MODEL, "input": ["one", "two"]}).status_code == 200
    refused = a.post("/v1/chat/completions", json={"model": MODEL})
    assert refused.status_code == 400
    assert a.get("/v1/models").status_code == 200  # not a model request: not metered

    rows = sorted(ledger(server), key=lambda e: e.id)
    assert [(e.kind, e.endpoint, e.status_code) for e in rows] == [
        ("sync", "/v1/chat/completions", 200),
        ("sync", "/v1/chat/completions", 200),
        ("sync", "/v1/embeddings", 200),
        ("sync", "/v1/chat/completions", 400),
    ]
    first, stream, embed, bad = rows
    usage = answered.json()["usage"]
    assert (first.input_tokens, first.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert first.cost == pytest.approx(price(first.input_tokens, first.output_tokens)) and first.cost > 0
    assert (first.model, first.backend, first.batch_id) == (MODEL, "scripted", None)
    assert stream.output_tokens > 0 and stream.cost == pytest.approx(price(stream.input_tokens, stream.output_tokens))
    assert (stream.model, stream.resolved_model, stream.backend) == (MODEL, first.resolved_model, "scripted")
    assert first.resolved_model is not None
    assert first.key_id == stream.key_id == bad.key_id != embed.key_id
    assert first.project_id != embed.project_id
    assert bad.error_code is not None and bad.input_tokens == 0 and bad.cost == 0
    assert all(e.finished_at >= e.started_at and e.latency_ms >= 0 for e in rows)


def run_batch(c: httpx.Client, lines: int) -> tuple[str, str]:
    data = jsonl([chat_line(f"c{i}", f"line {i}", model=MODEL) for i in range(lines)])
    uploaded = c.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    body = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    created = c.post("/v1/batches", json=body)
    assert created.status_code == 200, created.text
    return created.json()["id"], uploaded.json()["id"]


def assert_ledger_matches_output(server: Server, c: httpx.Client, batch_id: str, lines: int) -> None:
    batch = wait_for(lambda: (b := c.get(f"/v1/batches/{batch_id}").json())["status"] in TERMINAL and b, 60)
    assert batch["status"] == "completed", batch
    out = parse_jsonl(c.get(f"/v1/files/{batch['output_file_id']}/content").content)
    rows = ledger(server, batch_id=batch_id)
    assert len(rows) == len(out) == lines, "one row per line, none twice"
    assert sorted(e.line for e in rows) == sorted(set(e.line for e in rows))
    by_tokens = sum(o["response"]["body"]["usage"]["total_tokens"] for o in out)
    assert sum(e.input_tokens + e.output_tokens for e in rows) == by_tokens
    full = sum(price(e.input_tokens, e.output_tokens) for e in rows)
    assert sum(e.cost for e in rows) == pytest.approx(full / 2), "batch lines pay half"
    assert all(e.kind == "batch" and e.status_code == 200 and e.model == MODEL for e in rows)


def test_batch_lines_are_metered_to_the_key_that_created_the_batch(server: Server) -> None:
    key = server.create_key("alpha")
    c = client(server, key)
    batch_id, file_id = run_batch(c, 20)
    assert_ledger_matches_output(server, c, batch_id, 20)
    rows = ledger(server, batch_id=batch_id)
    store = SQLiteStore(server.data_dir / "batchgate.db")
    try:
        batch, file = store.get_batch(batch_id, None), store.get_file(file_id, None)
        assert batch is not None and file is not None
        assert batch.key_id is not None and batch.key_id == file.key_id == rows[0].key_id
        output = store.get_file(batch.output_file_id or "", None)
        assert output is not None and output.key_id == batch.key_id, "the result files too"
        assert {e.key_id for e in rows} == {batch.key_id}
    finally:
        store.close()


def test_logs_and_usage_show_a_project_its_own_and_an_admin_everything(server: Server) -> None:
    a, b = client(server, server.create_key("alpha")), client(server, server.create_key("beta"))
    admin = client(server, server.create_key("ops", "--scope", "admin", "--scope", "read"))
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    for _ in range(3):
        assert a.post("/v1/chat/completions", json=chat).status_code == 200
    assert b.post("/v1/chat/completions", json=chat).status_code == 200
    batch_id, _ = run_batch(a, 4)
    assert_ledger_matches_output(server, a, batch_id, 4)

    logs = a.get("/v1/logs").json()
    assert len(logs["data"]) == 7 and not logs["has_more"]
    assert {row["project_id"] for row in logs["data"]} == {logs["data"][0]["project_id"]}
    assert a.get("/v1/logs", params={"project_id": "proj_other"}).json()["data"] == logs["data"], "own project only"
    times = [row["started_at"] for row in logs["data"] if row["kind"] == "sync"]
    assert times == sorted(times, reverse=True), "newest first"
    assert [r["line"] for r in a.get("/v1/logs", params={"batch_id": batch_id}).json()["data"]].count(None) == 0
    page, seen = a.get("/v1/logs", params={"limit": 3}).json(), []
    while True:
        seen += [row["id"] for row in page["data"]]
        if not page["has_more"]:
            break
        page = a.get("/v1/logs", params={"limit": 3, "before": page["last_id"]}).json()
    assert seen == [row["id"] for row in logs["data"]]
    assert a.get("/v1/logs", params={"before": "nope"}).status_code == 400
    assert len(admin.get("/v1/logs").json()["data"]) == 8

    usage = a.get("/v1/usage", params={"group_by": "key,endpoint", "bucket": "hour"}).json()
    [bucket] = usage["data"]
    assert bucket["end_time"] - bucket["start_time"] == 3600
    assert bucket["sync"]["requests"] == 3 and bucket["batch"]["requests"] == 4
    batch_rows = ledger(server, batch_id=batch_id)
    assert bucket["batch"]["cost"] == pytest.approx(sum(e.cost for e in batch_rows))
    everyone = admin.get("/v1/usage", params={"group_by": "project", "bucket": "month"}).json()["data"]
    assert sorted(x["sync"]["requests"] for x in everyone) == [1, 3]
    assert a.get("/v1/usage", params={"group_by": "colour"}).status_code == 400
    csv = a.get("/v1/usage", params={"group_by": "model", "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    header, row = csv.text.strip().splitlines()
    assert header.startswith("start_time,end_time,model,sync_requests") and f",{MODEL},3," in row

    # the operator's commands read the same ledger from the data dir
    out = batchgate(server, "logs", "--project", "alpha", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [int(r["id"][4:]) for r in logs["data"]]
    out = batchgate(server, "usage", "--group-by", "project", "--csv")
    rows = {line.split(",")[1]: line.split(",") for line in out.strip().splitlines()[1:]}
    assert rows[logs["data"][0]["project_id"]][2] == "3" and rows[logs["data"][0]["project_id"]][5] == "4"
    assert "alpha" not in batchgate(server, "usage", "--project", "nope", check=False)


def batchgate(server: Server, *args: str, check: bool = True) -> str:
    command = [sys.executable, "-m", "batchgate", *args, "--data-dir", str(server.data_dir)]
    done = subprocess.run(command, env=server.env, capture_output=True, text=True)
    assert (done.returncode == 0) == check, done.stderr
    return done.stdout
