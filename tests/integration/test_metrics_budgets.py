"""GET /metrics and budgets on real `batchgate serve` processes (scripted backend, SQLite):
scraped with a real HTTP client and parsed with prometheus_client's parser; the numbers
come from the store, so a second process on the same data dir reports the same; a key's
budget refuses its synchronous requests with 429 insufficient_quota and pauses its batches
until the budget is raised.

The routing config prices the model `priced` at $1 per token: a synchronous "hello"
(1 token in, 2 out) costs $3, a batch line $1.50."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ALL_SCOPES, TERMINAL, Server, chat_line, jsonl, parse_jsonl, wait_for

SYNC_COST, LINE_COST = 3.0, 1.5
CONFIG = """
[models.priced]
backend = "local"
price = { input = 1000000, output = 1000000 }
"""
CHAT = {"model": "priced", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def start(start_server: Callable[..., Server], tmp_path: Path) -> Callable[..., Server]:
    config = tmp_path / "batchgate.toml"
    config.write_text(CONFIG)
    env = {
        "BATCHGATE_CONFIG": str(config),
        "BATCHGATE_BUDGET_CACHE_SECONDS": "0",
        "BATCHGATE_BUDGET_CHECK_INTERVAL": "0.05",
        "BATCHGATE_CONCURRENCY": "2",
    }
    return lambda **options: start_server(env=env, **options)


def client(server: Server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def scrape(c: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, by (sample name, sorted labels)."""
    response = c.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run_batch(c: httpx.Client, lines: int) -> str:
    data = jsonl([chat_line(f"c{i}", model="priced") for i in range(lines)])
    uploaded = c.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    body = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    created = c.post("/v1/batches", json=body)
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def finished(c: httpx.Client, batch_id: str) -> dict:
    return wait_for(lambda: (b := c.get(f"/v1/batches/{batch_id}").json())["status"] in TERMINAL and b, 60)


def test_metrics_come_from_the_store_and_need_an_admin_key(start: Callable[..., Server]) -> None:
    server = start()
    user = client(server, server.create_key("alpha"))
    admin_secret = server.create_key("ops", *ALL_SCOPES)
    admin = client(server, admin_secret)
    assert client(server, None).get("/metrics").status_code == 401
    refused = user.get("/metrics")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"

    answers = [user.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert user.post("/v1/chat/completions", json={"model": "priced"}).status_code == 400
    batch = finished(user, run_batch(user, 5))
    assert batch["status"] == "completed"
    out = parse_jsonl(user.get(f"/v1/files/{batch['output_file_id']}/content").content)

    samples = scrape(admin)
    sync = {"model": "priced", "backend": "local", "kind": "sync"}  # the route's backend
    lines = {**sync, "kind": "batch"}
    assert sample(samples, "batchgate_requests_total", **sync, status="200") == 3
    assert sample(samples, "batchgate_requests_total", **lines, status="200") == 5
    assert (
        sum(v for (n, labels), v in samples.items() if n == "batchgate_requests_total" and ("status", "400") in labels)
        == 1
    )
    sync_in = sum(a.json()["usage"]["prompt_tokens"] for a in answers)
    sync_out = sum(a.json()["usage"]["completion_tokens"] for a in answers)
    assert sample(samples, "batchgate_tokens_total", **sync, direction="input") == sync_in
    assert sample(samples, "batchgate_tokens_total", **sync, direction="output") == sync_out
    batch_tokens = sum(o["response"]["body"]["usage"]["total_tokens"] for o in out)
    assert sum(sample(samples, "batchgate_tokens_total", **lines, direction=d) for d in ("input", "output")) == (
        batch_tokens
    )
    assert sample(samples, "batchgate_cost_usd_total", **sync) == pytest.approx((sync_in + sync_out) * 1.0)
    assert sample(samples, "batchgate_cost_usd_total", **lines) == pytest.approx(batch_tokens * 0.5)
    assert sample(samples, "batchgate_request_duration_seconds_count", **sync) == 3
    assert sample(samples, "batchgate_request_duration_seconds_bucket", **lines, le="+Inf") == 5
    assert sample(samples, "batchgate_batches", status="completed") == 1
    assert sample(samples, "batchgate_batches", status="in_progress") == 0
    assert sample(samples, "batchgate_queue_lines") == 0

    # another process on the same data dir reports the same numbers: they live in the store
    other = start(data_dir=server.data_dir)
    again = scrape(client(other, admin_secret))
    for name in ("batchgate_requests_total", "batchgate_tokens_total", "batchgate_cost_usd_total", "batchgate_batches"):
        assert {k: v for k, v in again.items() if k[0] == name} == pytest.approx(
            {k: v for k, v in samples.items() if k[0] == name}
        )


def test_a_budget_refuses_sync_requests_and_pauses_batches_until_raised(start: Callable[..., Server]) -> None:
    server = start()
    secret = server.create_key("alpha", "--budget-usd", "7.5", "--budget-period", "day", "--budget-soft-usd", "5")
    spender, neighbour = client(server, secret), client(server, server.create_key("alpha"))
    admin = client(server, server.create_key("ops", *ALL_SCOPES))
    key_id = spender.get("/v1/budget").json()["key_id"]

    # $0, $3, $6 spent before each: under $7.50, answered; $9 spent: refused
    assert [spender.post("/v1/chat/completions", json=CHAT).status_code for _ in range(3)] == [200] * 3
    refused = spender.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == refused.json()["error"]["type"] == "insufficient_quota"
    assert 0 < int(refused.headers["retry-after"]) <= 86_400, "until the next UTC day"
    assert neighbour.post("/v1/chat/completions", json=CHAT).status_code == 200, "another key of the project"
    budget = spender.get("/v1/budget").json()
    assert (budget["spent_usd"], budget["exhausted"], budget["soft_reached"], budget["period"]) == (
        9.0, True, True, "day",
    )  # fmt: skip
    assert neighbour.get("/v1/budget", params={"key_id": key_id}).json()["spent_usd"] == 9.0, "same project"
    stranger = client(server, server.create_key("beta"))
    assert stranger.get("/v1/budget", params={"key_id": key_id}).status_code == 404

    paused_id, cancelled_id = run_batch(spender, 4), run_batch(spender, 4)
    for batch_id in (paused_id, cancelled_id):
        # a batch is paused as soon as it is seen, validating or running; validation goes on while paused
        paused = wait_for(
            lambda b=batch_id: (
                (x := spender.get(f"/v1/batches/{b}").json())["paused_reason"] and x["status"] == "in_progress" and x
            )
        )
        assert paused["paused_reason"] == "budget_exhausted" and paused["request_counts"]["completed"] == 0
    assert spender.post(f"/v1/batches/{cancelled_id}/cancel").status_code == 200
    cancelled = finished(spender, cancelled_id)
    assert cancelled["status"] == "cancelled" and cancelled["paused_reason"] is None

    samples = scrape(admin)
    assert sample(samples, "batchgate_limiter_rejections_total", reason="budget") == 1
    assert sample(samples, "batchgate_key_budget_exhausted", key_id=key_id, period="day") == 1
    assert sample(samples, "batchgate_key_budget_spent_usd", key_id=key_id, period="day") == 9.0
    assert sample(samples, "batchgate_batches_budget_paused") == 1

    updated = admin.post(f"/v1/admin/keys/{key_id}", json={"budget_usd": 100})
    assert updated.status_code == 200, updated.text
    resumed = finished(spender, paused_id)
    assert resumed["status"] == "completed" and resumed["request_counts"]["completed"] == 4
    assert resumed["paused_reason"] is None
    assert spender.get("/v1/budget").json()["spent_usd"] == pytest.approx(9.0 + 4 * LINE_COST)
    assert spender.post("/v1/chat/completions", json=CHAT).status_code == 200
