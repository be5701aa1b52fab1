"""Scheduling on a real server (issue 15), against bench/mock_upstream.py with a capacity:
synchronous requests go ahead of a batch's lines at the upstream; the gateway finds an
upstream's concurrency itself (AIMD) without failing lines; a small batch of another
project is not stuck behind a big one; a batch that cannot make its window shows at_risk;
project weights and the live limits through GET /v1/admin/scheduling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from support import Server, chat_line, jsonl, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from mock_upstream import run_mock

CHAT = "/v1/chat/completions"


def config(base_url: str, max_concurrency: int) -> str:
    return (
        f'[backends.mock]\nbase_url = "{base_url}"\nmax_concurrency = {max_concurrency}\nread_timeout = 30\n'
        'max_retries = 4\n\n[models.m]\nbackend = "mock"\n'
    )


def gateway(start_server: Callable[..., Server], tmp_path: Path, toml: str, insecure: bool = True) -> Server:
    path = tmp_path / "batchgate.toml"
    path.write_text(toml)
    return start_server({"BATCHGATE_CONFIG": str(path), "BATCHGATE_RETRY_BACKOFF": "0.05"}, insecure=insecure)


def submit(c: httpx.Client, lines: int, prefix: str = "l", window: str = "24h") -> dict:
    rows = [chat_line(f"{prefix}{i}", model="m", max_tokens=1) for i in range(lines)]
    file_id = c.post("/v1/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    r = c.post("/v1/batches", json={"input_file_id": file_id, "endpoint": CHAT, "completion_window": window})
    r.raise_for_status()
    return dict(r.json())


def batch_now(c: httpx.Client, batch_id: str) -> dict:
    return dict(c.get(f"/v1/batches/{batch_id}").json())


def done(c: httpx.Client, batch_id: str) -> int:
    counts = batch_now(c, batch_id)["request_counts"]
    return int(counts["completed"] + counts["failed"])


def finished(c: httpx.Client, batch_id: str, timeout: float = 120) -> dict:
    ended = ("completed", "failed", "expired", "cancelled")
    return dict(wait_for(lambda: (b := batch_now(c, batch_id))["status"] in ended and b, timeout, 0.05))


def test_synchronous_requests_go_ahead_of_batch_lines_at_the_upstream(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    # 2 at a time, 100 ms each: a FIFO would put a sync request behind the worker's ~60
    # queued lines, about 3 s; ahead of them it waits for the next free slot, 100 ms at most
    with run_mock("sched-priority", latency_ms=100, extra_args=("--max-concurrent", "2")) as mock:
        server = gateway(start_server, tmp_path, config(mock.base_url, 2))
        with httpx.Client(base_url=server.url, timeout=60) as c:
            batch = submit(c, 400)
            wait_for(lambda: done(c, batch["id"]) >= 10, 60)
            waits = []
            for _ in range(5):
                t = time.perf_counter()
                r = c.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                waits.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            scheduling = c.get("/v1/admin/scheduling").json()
            c.post(f"/v1/batches/{batch['id']}/cancel")
    assert sorted(waits)[2] < 1.0, waits  # the median; a loaded machine adds to each
    (upstream,) = scheduling["upstreams"]
    assert upstream["name"] == "mock" and upstream["max_limit"] == 2 and upstream["waiting_batch"] > 10


def test_the_gateway_finds_an_upstreams_concurrency_without_failing_lines(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    # the upstream answers 429 to a request arriving while 3 are in service; the config says 32
    with run_mock("sched-aimd", latency_ms=50, extra_args=("--reject-above", "3")) as mock:
        server = gateway(start_server, tmp_path, config(mock.base_url, 32))
        with httpx.Client(base_url=server.url, timeout=60) as c:
            batch = finished(c, submit(c, 300)["id"], timeout=180)
            limit = c.get("/v1/admin/scheduling").json()["upstreams"][0]["limit"]
        stats = mock.raw_stats()
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 300, "completed": 300, "failed": 0}
    assert stats["rejected"] > 0  # it did overload the upstream at first
    assert limit <= 6  # and settled near what the upstream takes, far below the configured 32


def test_a_small_batch_of_another_project_is_not_stuck_behind_a_big_one(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    with run_mock("sched-fair", latency_ms=50, extra_args=("--max-concurrent", "4")) as mock:
        server = gateway(start_server, tmp_path, config(mock.base_url, 4), insecure=False)
        key_a, key_b = (server.create_key(p, "--scope", "batch", "--scope", "read") for p in ("a", "b"))
        with (
            httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key_a}"}) as a,
            httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key_b}"}) as b,
        ):
            big = submit(a, 3000, "a")  # 80 lines/s: about 40 s
            wait_for(lambda: done(a, big["id"]) >= 50, 60)
            t = time.perf_counter()
            small = finished(b, submit(b, 10, "b")["id"])
            took = time.perf_counter() - t
            big_done = done(a, big["id"])
            a.post(f"/v1/batches/{big['id']}/cancel")
    assert small["status"] == "completed" and small["request_counts"]["completed"] == 10
    assert big_done < 3000  # the big one was still running
    assert took < 10, took  # behind the big one's 2,950 lines it would take over 35 s


def test_a_batch_that_cannot_make_its_window_is_at_risk(start_server: Callable[..., Server], tmp_path: Path) -> None:
    # one line at a time, 0.5 s each: 200 lines need 100 s; the window is 60 s
    with run_mock("sched-risk", latency_ms=500, extra_args=("--max-concurrent", "1")) as mock:
        server = gateway(start_server, tmp_path, config(mock.base_url, 1))
        with httpx.Client(base_url=server.url, timeout=60) as c:
            late = submit(c, 200, window="60s")
            calm = submit(c, 3, "c", window="24h")
            at_risk = wait_for(lambda: (b := batch_now(c, late["id"]))["at_risk"] and b, 30, 0.2)
            assert at_risk["status"] == "in_progress"
            calm_now = finished(c, calm["id"], timeout=60)
            c.post(f"/v1/batches/{late['id']}/cancel")
    assert calm_now["status"] == "completed" and calm_now["at_risk"] is False


def test_project_weights_are_set_and_shown_by_admins(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = gateway(start_server, tmp_path, "", insecure=False)
    admin = server.create_key("ops", "--scope", "admin")
    user = server.create_key("team", "--scope", "batch")
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {admin}"}) as c:
        r = c.post("/v1/admin/projects/team/weight", json={"weight": 3})
        assert r.status_code == 200, r.text
        weights = {p["name"]: p["weight"] for p in r.json()["projects"]}
        assert weights == {"ops": 1.0, "team": 3.0}
        assert c.post("/v1/admin/projects/nobody/weight", json={"weight": 2}).status_code == 404
        assert c.post("/v1/admin/projects/team/weight", json={"weight": 0}).status_code == 400
        assert c.get("/v1/admin/scheduling").json()["upstreams"] == []  # no upstream configured
    denied = httpx.get(server.url + "/v1/admin/scheduling", headers={"Authorization": f"Bearer {user}"})
    assert denied.status_code == 403

    # the same through the CLI
    def cli(key: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BATCHGATE_BASE_URL": server.url, "BATCHGATE_API_KEY": key}
        return subprocess.run([sys.executable, "-m", "batchgate", "scheduling", *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    set_weight = cli(admin, "weight", "team", "2.5", "--json")
    assert set_weight.returncode == 0, set_weight.stderr
    assert {p["name"]: p["weight"] for p in json.loads(set_weight.stdout)["projects"]} == {"ops": 1.0, "team": 2.5}
    shown = cli(admin, "show")
    assert shown.returncode == 0 and "team" in shown.stdout and "2.5" in shown.stdout, shown.stderr
    unknown = cli(admin, "weight", "nobody", "2")
    assert unknown.returncode == 2 and "No project 'nobody'" in unknown.stderr
    assert cli(admin, "weight", "team", "0").returncode == 2, "click refuses a weight out of (0, 1000]"
    assert cli(user, "show").returncode != 0
