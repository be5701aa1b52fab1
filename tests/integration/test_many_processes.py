"""Many processes on one PostgreSQL database and one shared files directory, as on many
hosts: 2 API processes (`serve --no-worker`) and 3 `batchgate worker` processes run a
batch to the end, every line answered exactly once, through a kill -9 of a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from pgdb import new_database
from support import TERMINAL, Server, chat_line, jsonl, parse_jsonl, wait_for

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.database_url = new_database()
        self.env = {"BATCHGATE_DATABASE_URL": self.database_url, "BATCHGATE_CONCURRENCY": "16"}
        self.apis: list[Server] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self, apis: int, workers: int) -> None:
        for _ in range(apis):
            self.apis.append(Server(self.data_dir, self.env, args=("--no-worker",)).start())
        env = {**self.apis[0].env}
        for n in range(workers):
            log = open(self.data_dir / f"worker-{n}.log", "ab")  # noqa: SIM115 - the process's for its lifetime
            cmd = [sys.executable, "-m", "batchgate", "worker", "--data-dir", str(self.data_dir)]
            self.workers.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: self.registered_workers() == workers, 60, 0.1)

    def sql(self, query: str) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query).fetchall()

    def registered_workers(self) -> int:
        return int(self.sql("SELECT count(*) FROM workers")[0][0])

    def stop(self) -> None:
        for api in self.apis:
            api.kill()
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "shared")
    c.data_dir.mkdir()
    yield c
    c.stop()


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_two_apis_three_workers_finish_a_batch_through_a_worker_kill(cluster: Cluster) -> None:
    cluster.start(apis=2, workers=3)
    key = cluster.apis[0].create_key("p")
    first, second = (client(api, key) for api in cluster.apis)
    ids = [f"m{i}" for i in range(3000)]
    rows = [chat_line(i, f"say {i}", mock={"sleep": 0.01}) for i in ids]
    # a file uploaded through one API process, its batch created through the other
    file_id = first.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    batch = second.post(
        "/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    ).json()
    url = f"/batches/{batch['id']}"

    # every worker takes part: each holds rows at some point while the batch runs
    holders: set[str] = set()

    def all_workers_ran_rows() -> bool:
        holders.update(r[0] for r in cluster.sql("SELECT DISTINCT worker_id FROM requests WHERE worker_id IS NOT NULL"))
        return len(holders) == 3

    wait_for(all_workers_ran_rows, 60, 0.02)
    wait_for(lambda: first.get(url).json()["request_counts"]["completed"] >= 600, 60, 0.05)
    victim = cluster.workers[0]
    os.kill(victim.pid, signal.SIGKILL)  # kill -9 mid-batch, rows in flight
    victim.wait(10)
    assert first.get(url).json()["status"] == "in_progress"

    done = wait_for(lambda: (b := second.get(url).json())["status"] in TERMINAL and b, 180, 0.1)
    assert done["status"] == "completed"
    out = parse_jsonl(first.get(f"/files/{done['output_file_id']}/content").content)
    assert done["error_file_id"] is None
    answered = [r["custom_id"] for r in out]
    assert sorted(answered) == sorted(ids), "every line answered exactly once"
    assert all(r["response"]["body"]["choices"][0]["message"]["content"] == f"echo: say {r['custom_id']}" for r in out)
    assert done["request_counts"] == {"total": 3000, "completed": 3000, "failed": 0}
    # the killed worker was found dead and forgotten by a survivor
    assert cluster.registered_workers() == 2
