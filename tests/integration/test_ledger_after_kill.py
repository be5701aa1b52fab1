"""The ledger's totals equal what the clients were answered, after a kill -9 of the server
in the middle of a batch: requests, tokens and cost of the ledger are the sums over the
batch's output and error files plus the synchronous responses, on SQLite and PostgreSQL.

The routing config prices the model `priced` at $1 per token (batch lines pay half), so
a token miscounted or a line metered twice shows in the cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pgdb import new_database
from support import TERMINAL, Server, chat_line, jsonl, parse_jsonl, wait_for

CONFIG = """
[models.priced]
backend = "local"
price = { input = 1000000, output = 1000000 }
"""


@pytest.fixture(params=["sqlite", "postgres"])
def start(request: pytest.FixtureRequest, start_server: Callable[..., Server], tmp_path: Path) -> Callable[..., Server]:
    config = tmp_path / "batchgate.toml"
    config.write_text(CONFIG)
    env = {"BATCHGATE_CONFIG": str(config), "BATCHGATE_CONCURRENCY": "16"}
    if request.param == "postgres":
        env["BATCHGATE_DATABASE_URL"] = new_database()

    def start(**options: Any) -> Server:
        return start_server(env=env, **options)

    return start


def ledger_totals(server: Server, key_sql: str = "") -> tuple[int, int, int, float]:
    sql = "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost), 0) FROM ledger"
    if url := server.env.get("BATCHGATE_DATABASE_URL"):
        with psycopg.connect(url) as pg:
            row = pg.execute(sql).fetchone()
    else:
        import sqlite3

        with sqlite3.connect(server.data_dir / "batchgate.db") as db:
            row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), float(row[3])


def chat(c: httpx.Client, n: int) -> list[dict]:
    answers = []
    for i in range(n):
        body = {"model": "priced", "messages": [{"role": "user", "content": f"sync request number {i}"}]}
        r = c.post("/chat/completions", json=body)
        assert r.status_code == 200, r.text
        answers.append(r.json()["usage"])
    return answers


def test_ledger_totals_equal_the_answers_after_a_kill_in_the_middle_of_a_batch(start: Callable[..., Server]) -> None:
    server = start()
    key = server.create_key("p")
    c = httpx.Client(base_url=server.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    usages = chat(c, 5)
    rows = [
        chat_line(
            f"k{i}",
            " ".join(["word"] * (i % 7 + 1)),
            model="priced",
            mock={"sleep": 0.02, **({"status": 500} if i % 50 == 0 else {})},
        )
        for i in range(600)
    ]
    file_id = c.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = c.post("/batches", json=body).json()["id"]
    wait_for(lambda: c.get(f"/batches/{batch_id}").json()["request_counts"]["completed"] >= 150, 60)
    server.kill()

    server = start(data_dir=server.data_dir)
    c = httpx.Client(base_url=server.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    usages += chat(c, 5)
    batch = wait_for(lambda: (b := c.get(f"/batches/{batch_id}").json())["status"] in TERMINAL and b, 120, 0.1)
    assert batch["status"] == "completed"
    out = parse_jsonl(c.get(f"/files/{batch['output_file_id']}/content").content)
    err = parse_jsonl(c.get(f"/files/{batch['error_file_id']}/content").content)
    assert len(out) + len(err) == 600 and len(err) == 12

    count, tokens_in, tokens_out, cost = ledger_totals(server)
    answered_in = sum(u["prompt_tokens"] for u in usages) + sum(
        o["response"]["body"]["usage"]["prompt_tokens"] for o in out
    )
    answered_out = sum(u["completion_tokens"] for u in usages) + sum(
        o["response"]["body"]["usage"]["completion_tokens"] for o in out
    )
    # the error lines (a 500 answer each) used no tokens and cost nothing, but are metered
    assert count == len(usages) + len(out) + len(err)
    assert (tokens_in, tokens_out) == (answered_in, answered_out)
    sync_cost = sum(u["prompt_tokens"] + u["completion_tokens"] for u in usages) * 1.0
    batch_cost = sum(o["response"]["body"]["usage"]["total_tokens"] for o in out) * 0.5
    assert cost == pytest.approx(sync_cost + batch_cost)
    assert batch["usage"]["total_tokens"] == sum(o["response"]["body"]["usage"]["total_tokens"] for o in out)
