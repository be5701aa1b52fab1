"""The Swarms-compatible agent API on a real server and the scripted echo backend: single
and batch agent completions, async batches that survive a kill -9, max_loops, swarms,
and the lookups the swarms-client makes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support import Server, wait_for

from batchgate.core.agents.backend import CONTINUE


def agent(task: str, **config: Any) -> dict[str, Any]:
    return {"agent_config": {"agent_name": "Scorer", "description": "scores leads", **config}, "task": task}


@pytest.fixture
def keyed(start_server: Callable[..., Server]) -> tuple[Server, httpx.Client]:
    server = start_server(env={"BATCHGATE_MAX_AGENT_BATCH": "300"})
    key = server.create_key("p")
    return server, httpx.Client(base_url=server.url + "/v1", headers={"x-api-key": key}, timeout=60)


def test_single_agent_completion_with_x_api_key(keyed: tuple[Server, httpx.Client]) -> None:
    _, c = keyed
    r = c.post(
        "/agent/completions", json=agent("Score lead 7", temperature=0.2, mcp_url="http://x", streaming_on=False)
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["success"] is True and out["name"] == "Scorer" and out["temperature"] == 0.2
    assert out["outputs"] == [{"role": "Scorer", "content": "echo: Score lead 7", "tool_calls": None}]
    assert out["usage"]["total_tokens"] == out["usage"]["input_tokens"] + out["usage"]["output_tokens"] > 0
    assert out["job_id"] and out["timestamp"]
    # Authorization: Bearer works as well; no key is a 401
    bearer = c.headers["x-api-key"]
    r = httpx.post(c.base_url.join("agent/completions"), json=agent("x"), headers={"Authorization": f"Bearer {bearer}"})
    assert r.status_code == 200
    assert httpx.post(c.base_url.join("agent/completions"), json=agent("x")).status_code == 401
    # a bad body is a 400 naming the field
    r = c.post("/agent/completions", json={"agent_config": {"agent_name": "a"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body.task"


def test_batch_results_in_input_order_and_failed_records_carry_their_error(keyed: tuple[Server, httpx.Client]) -> None:
    _, c = keyed
    body = [
        agent("lead 0"),
        {"agent_config": {"agent_name": "Scorer"}},  # no task: this record fails, the others run
        agent("lead 2", llm_args={"mock": {"status": 400}}),  # the model refuses this one
        agent("lead 3", max_tokens=50, unknown_setting=True),
    ]
    r = c.post("/agent/batch/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["total_requests"] == 4 and out["status"] == "completed" and out["batch_id"].startswith("batch_")
    results = out["results"]
    assert [r["success"] for r in results] == [True, False, False, True]
    assert results[0]["outputs"][0]["content"] == "echo: lead 0"
    assert results[3]["outputs"][0]["content"] == "echo: lead 3"
    assert results[1]["error"]["code"] == "invalid_value" and "task" in results[1]["error"]["message"]
    assert "scripted error 400" in results[2]["error"]["message"]
    assert out["completed_requests"] == 2 and out["failed_requests"] == 2
    # the same batch is an ordinary batch underneath
    assert c.get(f"/batches/{out['batch_id']}").json()["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert c.get(f"/agent/batch/completions/{out['batch_id']}").json() == out  # the same answer, later


def test_batch_over_the_limit_is_413_naming_it(keyed: tuple[Server, httpx.Client]) -> None:
    _, c = keyed
    r = c.post("/agent/batch/completions", json=[agent(f"l{i}") for i in range(301)])
    assert r.status_code == 413 and "300" in r.json()["error"]["message"]


def test_async_batch_is_listed_cancellable_and_read_back(keyed: tuple[Server, httpx.Client]) -> None:
    _, c = keyed
    r = c.post(
        "/agent/batch/completions",
        json=[agent(f"slow {i}", llm_args={"mock": {"sleep": 0.2}}) for i in range(40)],
        headers={"Prefer": "respond-async"},
    )
    assert r.status_code == 202, r.text
    batch_id = r.json()["batch_id"]
    running = c.get(f"/agent/batch/completions/{batch_id}").json()
    assert running["status"] in ("queued", "in_progress") and running["results"] == []
    assert batch_id in [b["batch_id"] for b in c.get("/agent/batch/completions").json()["data"]]
    assert c.post(f"/agent/batch/completions/{batch_id}/cancel").status_code == 200
    done = wait_for(lambda: (b := c.get(f"/agent/batch/completions/{batch_id}").json())["status"] == "cancelled" and b)
    assert len(done["results"]) == 40
    assert all(r["success"] or r["error"]["code"] == "batch_cancelled" for r in done["results"])
    # operation endpoints do not mistake it for an operation batch
    assert batch_id not in [b["batch_id"] for b in c.get(c.base_url.join("/api/batches")).json()["data"]]


def test_max_loops_keeps_every_turn(keyed: tuple[Server, httpx.Client]) -> None:
    _, c = keyed
    r = c.post("/agent/batch/completions", json=[agent("draft a pitch", max_loops=3)])
    result = r.json()["results"][0]
    assert result["success"], result
    # turn 1 answers the task; turns 2 and 3 answer the request to improve (the echo shows it)
    assert [o["content"] for o in result["outputs"]] == [
        "echo: draft a pitch",
        f"echo: {CONTINUE}",
        f"echo: {CONTINUE}",
    ]
    single = c.post("/agent/completions", json=agent("draft a pitch", max_loops=3)).json()
    assert [o["content"] for o in single["outputs"]] == [o["content"] for o in result["outputs"]]
    assert single["usage"] == result["usage"]


def test_swarms(keyed: tuple[Server, httpx.Client]) -> None:
    _, c = keyed
    agents = [{"agent_name": "A", "model_name": "m"}, {"agent_name": "B", "model_name": "m"}]

    def swarm(kind: str, task: str = "rank these") -> dict[str, Any]:
        return {"name": "s", "description": "d", "agents": agents, "swarm_type": kind, "task": task}

    seq = c.post("/swarm/completions", json=swarm("SequentialWorkflow"))
    assert seq.status_code == 200, seq.text
    out = seq.json()
    assert out["status"] == "success" and out["number_of_agents"] == 2 and out["swarm_type"] == "SequentialWorkflow"
    assert out["output"][0] == {"role": "A", "content": "echo: rank these"}
    assert "Output of the previous agent (A):\necho: rank these" in out["output"][1]["content"]
    assert set(out["usage"]["per_agent"]) == {"A", "B"}
    assert out["usage"]["total_tokens"] == sum(a["total_tokens"] for a in out["usage"]["per_agent"].values())

    conc = c.post("/swarm/completions", json=swarm("ConcurrentWorkflow")).json()
    assert [m["content"] for m in conc["output"]] == ["echo: rank these"] * 2
    moa = c.post("/swarm/completions", json=swarm("MixtureOfAgents")).json()
    assert [m["role"] for m in moa["output"]] == ["A", "B", "Aggregator"]
    vote = c.post("/swarm/completions", json=swarm("MajorityVoting")).json()["output"]
    assert vote["answer"] == "echo: rank these" and vote["tie"] is False and vote["votes"] == {"echo rank these": 2}

    bad = c.post("/swarm/completions", json=swarm("GroupChat"))
    assert bad.status_code == 400 and "SequentialWorkflow" in bad.json()["error"]["message"]

    batch = c.post(
        "/swarm/batch/completions", json=[swarm("ConcurrentWorkflow", "t1"), swarm("SequentialWorkflow", "t2")]
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()
    assert isinstance(results, list) and [r["status"] for r in results] == ["success", "success"]
    assert results[0]["output"][0]["content"] == "echo: t1"


def test_lookups_the_swarms_client_makes(keyed: tuple[Server, httpx.Client]) -> None:
    _, c = keyed
    c.post("/agent/batch/completions", json=[agent("x"), agent("y")])
    assert c.get("/swarms/available").json()["swarms"] == [
        "SequentialWorkflow", "ConcurrentWorkflow", "MixtureOfAgents", "MajorityVoting"
    ]  # fmt: skip
    assert c.get("/models/available").json()["success"] is True
    limits = c.get("/rate/limits").json()["rate_limits"]
    assert limits["minute"]["count"] == limits["day"]["count"] == 2 and limits["minute"]["limit"] is None
    logs = c.get("/swarm/logs").json()
    assert logs["count"] == 1 and logs["logs"][0]["data"]["action"] == "agent_batch"


def test_rate_limits_show_the_keys_request_limits(start_server: Callable[..., Server]) -> None:
    server = start_server()
    key = server.create_key("p", "--limit", "requests=5/1m", "--limit", "total_tokens=100000/1h")
    c = httpx.Client(base_url=server.url + "/v1", headers={"x-api-key": key}, timeout=60)
    for task in ("a", "b"):
        assert c.post("/agent/completions", json=agent(task)).status_code == 200
    limits = c.get("/rate/limits").json()["rate_limits"]
    # the two sync completions took 2 of the 5 (the window drains 1 every 12 s)
    assert limits["minute"]["limit"] == 5 and limits["minute"]["remaining"] == 3
    assert limits["minute"]["exceeded"] is False
    assert limits["hour"]["limit"] is None and limits["day"]["limit"] is None  # a token limit is not a request limit


def test_async_agent_batch_survives_kill_9(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_CONCURRENCY": "8"})
    key = server.create_key("p")
    c = httpx.Client(base_url=server.url + "/v1", headers={"x-api-key": key}, timeout=60)
    body = [agent(f"lead {i}", llm_args={"mock": {"sleep": 0.1}}) for i in range(200)]
    r = c.post("/agent/batch/completions?wait=false", json=body)
    assert r.status_code == 202
    batch_id = r.json()["batch_id"]
    wait_for(lambda: c.get(f"/agent/batch/completions/{batch_id}").json()["completed_requests"] >= 30)
    server.kill()
    with sqlite3.connect(server.data_dir / "batchgate.db") as db:
        assert db.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()[0] == "in_progress"
    restarted = start_server(data_dir=server.data_dir, env={"BATCHGATE_CONCURRENCY": "8"})
    c = httpx.Client(base_url=restarted.url + "/v1", headers={"x-api-key": key}, timeout=60)
    done = wait_for(
        lambda: (b := c.get(f"/agent/batch/completions/{batch_id}").json())["status"] == "completed" and b, 120
    )
    results = done["results"]
    assert [r["outputs"][0]["content"] for r in results] == [f"echo: lead {i}" for i in range(200)]
    assert all(r["success"] for r in results)
    batch = c.get(f"/batches/{batch_id}").json()
    assert batch["request_counts"] == {"total": 200, "completed": 200, "failed": 0}
    out = c.get(f"/files/{batch['output_file_id']}/content").text.splitlines()
    ids = [line.split('"custom_id":"')[1].split('"')[0] for line in out]
    assert len(ids) == len(set(ids)) == 200, "every record answered exactly once"


def test_agents_on_the_local_model(start_server: Callable[..., Server]) -> None:
    """smollm2-135m: a structured-output agent batch, and a two-turn agent."""
    server = start_server(env={"BATCHGATE_BACKEND": "local", "BATCHGATE_ENGINE_SLOTS": "4"}, insecure=True)
    c = httpx.Client(base_url=server.url + "/v1", timeout=300)
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}, "reason": {"type": "string"}},
        "required": ["score", "reason"],
    }
    config = {
        "agent_name": "Lead Scorer",
        "system_prompt": "Score the lead from 0 to 100 and give a one-line reason, as JSON.",
        "model_name": "smollm2-135m",
        "max_tokens": 60,
        "temperature": 0,
        "llm_args": {"response_format": {"type": "json_schema", "json_schema": {"name": "score", "schema": schema}}},
    }
    leads = ["CTO at a 2,000-person bank, asked for pricing", "student, downloaded the free ebook", "no data"]
    out = c.post("/agent/batch/completions", json=[{"agent_config": config, "task": t} for t in leads]).json()
    assert [r["success"] for r in out["results"]] == [True] * 3, out
    for r in out["results"]:
        if r["outputs"][0]["content"].rstrip().endswith("}"):  # not cut off at max_tokens
            assert 0 <= json.loads(r["outputs"][0]["content"])["score"] <= 100
    two = c.post(
        "/agent/completions", json=agent("Name a colour.", model_name="smollm2-135m", max_tokens=16, max_loops=2)
    )
    assert two.status_code == 200 and len(two.json()["outputs"]) == 2
    bad = c.post(
        "/agent/batch/completions",
        json=[agent("x", model_name="no-such-model"), agent("y", model_name="smollm2-135m", max_tokens=4)],
    )
    results = bad.json()["results"]
    assert results[0]["error"]["code"] == "model_not_found" and results[1]["success"] is True
