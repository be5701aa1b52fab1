"""Rate limits on a real server: 429 `rate_limit_exceeded` with Retry-After at exactly the
limit, OpenAI's x-ratelimit-* headers on every answer, every synchronous model endpoint
counted in one place, limits shared by two server processes on one data dir, and a
2,000-line batch paced inside its key's window (no line failed, the pace the limit's)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from support import Server, chat_line, jsonl
from test_keys_admin import client, key

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


def test_n_requests_pass_the_next_gets_429_with_retry_after_and_headers(server: Server) -> None:
    c = client(server, key(server, "p", "--limit", "requests=3/1m", "--limit", "total_tokens=1000/1m"))
    answers = [c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    first = answers[0].headers
    assert first["x-ratelimit-limit-requests"] == "3" and first["x-ratelimit-limit-tokens"] == "1000"
    assert int(first["x-ratelimit-remaining-tokens"]) == 1000 - 2 - 10, "prompt estimate + max_tokens"
    assert DURATION.match(first["x-ratelimit-reset-requests"]) and DURATION.match(first["x-ratelimit-reset-tokens"])
    assert first["x-ratelimit-reset-requests"].startswith(("19.", "20s")), "one request of 3/min: back in 20 s"
    refused = c.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "3 requests per 60 s" in error["message"] and "requests=3/1m" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 20 and refused.headers["x-ratelimit-remaining-requests"] == "0"
    # the settled tokens: the scripted backend used fewer than estimated, the rest came back
    assert int(answers[2].headers["x-ratelimit-remaining-tokens"]) < int(first["x-ratelimit-remaining-tokens"])
    logs = c.get("/v1/logs", params={"limit": 10}).json()["data"]
    assert [row["error_code"] for row in logs][:1] == ["rate_limit_exceeded"], "a refusal is metered"


def test_every_sync_model_endpoint_counts_against_the_key(server: Server) -> None:
    c = client(server, key(server, "p", "--limit", "requests=4/1h"))
    calls = [
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "m1", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "m1", "input": "hi"}),
        ("/v1/responses", {"model": "m1", "input": "hi"}),
        ("/api/completions/run", {"model": "m1", "items": [{"text": "hi"}], "prompt": "Say {{text}}"}),
    ]
    statuses = [c.post(path, json=body).status_code for path, body in calls]
    assert statuses[:4] == [200, 200, 200, 200] and statuses[4] == 429, statuses
    assert c.get("/v1/batches").status_code == 200 and "x-ratelimit-limit-requests" not in c.get("/v1/batches").headers
    other = client(server, key(server, "p", "--limit", "requests=4/1h"))
    assert other.post("/v1/chat/completions", json=CHAT).status_code == 200, "keys are isolated"
    unlimited = client(server, key(server, "p"))
    answer = unlimited.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200 and "x-ratelimit-limit-requests" not in answer.headers


def test_two_servers_on_one_data_dir_share_the_limit(start_server: Callable[..., Server], tmp_path: Path) -> None:
    a = start_server(data_dir=tmp_path / "shared")
    b = start_server(data_dir=tmp_path / "shared")
    secret = key(a, "p", "--limit", "requests=10/1h", "--max-parallel", "50")
    ca, cb = client(a, secret), client(b, secret)
    statuses = [(ca if i % 2 else cb).post("/v1/chat/completions", json=CHAT).status_code for i in range(14)]
    assert statuses.count(200) == 10 and statuses[10:] == [429] * 4, statuses


def test_a_2000_line_batch_is_paced_inside_its_key_window(server: Server) -> None:
    """200 requests per second on the key: the first 200 at once, then 200 a second. No
        line fails; between 500 and 1,900 lines done the pace (a least-squares fit of lines done
    over time, polled every 50 ms) is 200/s within 10%."""
    limit, window, n = 200, 1, 2000
    secret = key(server, "p", "--limit", f"requests={limit}/{window}s")
    c = client(server, secret)
    data = jsonl([chat_line(f"r{i}") for i in range(n)])
    file_id = c.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = c.post("/v1/batches", json=body).json()["id"]
    samples: list[tuple[float, int]] = []  # (mid-time of the GET, lines done)
    pacing_seen: list[str] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        before = time.monotonic()
        batch = c.get(f"/v1/batches/{batch_id}").json()
        done = batch["request_counts"]["completed"] + batch["request_counts"]["failed"]
        samples.append(((before + time.monotonic()) / 2, done))
        if batch.get("pacing"):
            pacing_seen.append(batch["pacing"])
            assert batch["rate_limited_until"] >= int(time.time()) - 1
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            break
        time.sleep(0.05)
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": n, "completed": n, "failed": 0}
    pace = slope([(t, d) for t, d in samples if 500 <= d <= 1900])  # least squares: lines per second
    assert abs(pace - limit / window) <= 0.1 * limit / window, f"{pace:.1f} lines/s for a limit of {limit}/{window}s"
    assert pacing_seen and f"requests={limit}/{window}s" in pacing_seen[0], "the batch said why it was slow"
    print(f"paced at {pace:.1f} lines/s (limit {limit / window:.0f}/s)")


def slope(points: list[tuple[float, int]]) -> float:
    mean_t = sum(t for t, _ in points) / len(points)
    mean_d = sum(d for _, d in points) / len(points)
    return sum((t - mean_t) * (d - mean_d) for t, d in points) / sum((t - mean_t) ** 2 for t, _ in points)
