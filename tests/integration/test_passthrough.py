"""Native batch passthrough: a gateway whose route says `batch = "native"` runs the batch
on its upstream's own Files + Batches API. The upstream is a second, real batchgate
server (scripted backend), so both ends speak the real protocol."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support import Server, chat_line, jsonl, parse_jsonl, wait_for

CHAT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def pair(start_server: Callable[..., Server], tmp_path: Path, **upstream_env: str) -> tuple[Server, Server]:
    upstream = start_server(upstream_env, insecure=True, data_dir=tmp_path / "upstream")
    config = tmp_path / "batchgate.toml"
    config.write_text(f"""
[backends.up]
base_url = "{upstream.url}/v1"

[models.echo]
backend = "up"
model = "test-model"
batch = "native"
price = {{ input = 4.0, output = 8.0 }}
""")
    env = {"BATCHGATE_CONFIG": str(config), "BATCHGATE_UPSTREAM_POLL_INTERVAL": "1"}
    gateway = start_server(env, insecure=True, data_dir=tmp_path / "gateway")
    return gateway, upstream


def submit(server: Server, lines: list[dict]) -> str:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        files = {"file": ("in.jsonl", jsonl(lines))}
        file_id = c.post("/v1/files", files=files, data={"purpose": "batch"}).json()["id"]
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
        return str(c.post("/v1/batches", json=body).json()["id"])


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30)


def results(server: Server, batch: dict) -> list[dict]:
    rows: list[dict] = []
    for key in ("output_file_id", "error_file_id"):
        if batch.get(key):
            rows += parse_jsonl(get(server, f"/v1/files/{batch[key]}/content").content)
    return rows


def finished(server: Server, batch_id: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (b := get(server, f"/v1/batches/{batch_id}").json())["status"] in TERMINAL and b, timeout, 0.2
    )


def test_a_native_route_runs_the_batch_on_the_upstreams_batch_api(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    gateway, upstream = pair(start_server, tmp_path)
    lines = [chat_line(f"n{i}", f"item {i}", model="echo") for i in range(50)]
    lines.append(chat_line("bad", "x", model="echo", mock={"status": 400}))
    batch = finished(gateway, submit(gateway, lines))
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 51, "completed": 50, "failed": 1}
    rows = results(gateway, batch)
    assert sorted(r["custom_id"] for r in rows) == sorted(line["custom_id"] for line in lines)
    ok = [r for r in rows if r["error"] is None and r["response"]["status_code"] == 200]
    assert len(ok) == 50 and all(r["response"]["body"]["model"] == "test-model" for r in ok)
    [bad] = [r for r in rows if r["custom_id"] == "bad"]
    assert bad["response"]["status_code"] == 400
    # exactly one upstream batch, of the same lines, under the upstream's model name
    [remote] = get(upstream, "/v1/batches").json()["data"]
    assert remote["status"] == "completed" and remote["request_counts"]["total"] == 51
    assert remote["metadata"] == {"batchgate_batch_id": batch["id"]}
    sent = parse_jsonl(get(upstream, f"/v1/files/{remote['input_file_id']}/content").content)
    assert {line["body"]["model"] for line in sent} == {"test-model"}
    assert [line["custom_id"] for line in sent] == [line["custom_id"] for line in lines]
    # prices apply with the batch discount
    usage = batch["usage"]
    expected = (usage["input_tokens"] * 4.0 + usage["output_tokens"] * 8.0) / 1e6 * 0.5
    assert usage["cost"] == pytest.approx(expected) and expected > 0


def test_cancel_propagates_to_the_upstream_and_keeps_partial_results(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    gateway, upstream = pair(start_server, tmp_path, BATCHGATE_CONCURRENCY="2")
    lines = [chat_line(f"c{i}", model="echo", mock={"sleep": 0.3}) for i in range(60)]  # ~9 s upstream
    batch_id = submit(gateway, lines)
    remote = wait_for(lambda: (d := get(upstream, "/v1/batches").json()["data"]) and d[0], 30, 0.1)
    wait_for(lambda: get(upstream, f"/v1/batches/{remote['id']}").json()["request_counts"]["completed"] >= 4, 30)
    wait_for(lambda: get(gateway, f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] > 0, 30)
    assert httpx.post(f"{gateway.url}/v1/batches/{batch_id}/cancel", timeout=30).json()["status"] == "cancelling"
    batch = finished(gateway, batch_id)
    assert batch["status"] == "cancelled"
    assert get(upstream, f"/v1/batches/{remote['id']}").json()["status"] == "cancelled"
    rows = results(gateway, batch)
    assert sorted(r["custom_id"] for r in rows) == sorted(line["custom_id"] for line in lines)
    done = [r for r in rows if r["error"] is None]
    cancelled = [r for r in rows if r["error"] and r["error"]["code"] == "batch_cancelled"]
    assert done and cancelled and len(done) + len(cancelled) == 60
    assert batch["request_counts"]["completed"] == len(done)


def test_a_batch_mixing_native_and_other_models_runs_line_by_line(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    gateway, upstream = pair(start_server, tmp_path)
    lines = [chat_line("a", model="echo"), chat_line("b", model="test-model")]
    batch = finished(gateway, submit(gateway, lines))
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 2
    assert get(upstream, "/v1/batches").json()["data"] == []  # the echo line went as a chat request


def test_a_gateway_killed_mid_batch_resumes_polling_without_resubmitting(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    gateway, upstream = pair(start_server, tmp_path, BATCHGATE_CONCURRENCY="4")
    lines = [chat_line(f"k{i}", model="echo", mock={"sleep": 0.2}) for i in range(40)]  # ~2 s upstream
    batch_id = submit(gateway, lines)
    wait_for(lambda: get(upstream, "/v1/batches").json()["data"], 30, 0.05)
    gateway.kill()  # kill -9 while the upstream batch runs
    restarted = start_server(gateway.env, insecure=True, data_dir=gateway.data_dir)
    batch = finished(restarted, batch_id)
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 40
    assert sorted(r["custom_id"] for r in results(restarted, batch)) == sorted(line["custom_id"] for line in lines)
    assert len(get(upstream, "/v1/batches").json()["data"]) == 1  # submitted once
