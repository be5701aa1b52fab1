"""The official `swarms-client` (0.8.x), unchanged, against a real batchgate server: only
`base_url` and `api_key` differ from talking to the Swarms cloud."""

from __future__ import annotations

import pytest
from support import Server
from swarms_client import SwarmsClient

AGENT = {
    "agent_name": "Lead Scorer",
    "description": "Scores B2B leads",
    "system_prompt": "Score the lead from 0 to 100.",
    "model_name": "gpt-4o-mini",  # the scripted backend answers any model name
    "max_tokens": 64,
    "temperature": 0.0,
    "role": "worker",
    "max_loops": 1,
    "streaming_on": False,  # sent by Swarms clients; accepted and ignored
}


@pytest.fixture
def client(server: Server) -> SwarmsClient:
    return SwarmsClient(base_url=server.url, api_key=server.create_key("swarms"), max_retries=0, timeout=60)


def test_single_agent_completion(client: SwarmsClient) -> None:
    out = client.agent.run(agent_config=AGENT, task="Acme Corp, 500 employees, asked for a demo")
    assert out["success"] is True and out["name"] == "Lead Scorer"
    assert out["outputs"][0]["content"] == "echo: Acme Corp, 500 employees, asked for a demo"  # type: ignore[index]
    assert out["usage"]["total_tokens"] > 0  # type: ignore[index]


def test_agent_batch(client: SwarmsClient) -> None:
    body = [{"agent_config": AGENT, "task": f"lead {i}"} for i in range(12)]
    out = client.agent.batch.run(body=body)  # type: ignore[arg-type]
    assert out["total_requests"] == 12 and isinstance(out["execution_time"], float)
    results = out["results"]
    assert [r["outputs"][0]["content"] for r in results] == [f"echo: lead {i}" for i in range(12)]  # type: ignore[index, union-attr]


def test_swarm_and_swarm_batch(client: SwarmsClient) -> None:
    agents = [AGENT, {**AGENT, "agent_name": "Reviewer"}]
    one = client.swarms.run(name="triage", agents=agents, swarm_type="SequentialWorkflow", task="lead 1")  # type: ignore[arg-type]
    assert one["status"] == "success" and one["number_of_agents"] == 2
    many = client.swarms.batch.run(
        body=[
            {"name": f"s{i}", "agents": agents, "swarm_type": "ConcurrentWorkflow", "task": f"t{i}"} for i in range(3)
        ]  # type: ignore[list-item]
    )
    assert [s["output"][0]["content"] for s in many] == ["echo: t0", "echo: t1", "echo: t2"]  # type: ignore[index]


def test_lookups(client: SwarmsClient) -> None:
    assert "MajorityVoting" in client.swarms.check_available()["swarms"]  # type: ignore[operator]
    assert client.models.list_available()["success"] is True
    client.agent.batch.run(body=[{"agent_config": AGENT, "task": "x"}])
    assert client.client.rate.get_limits()["rate_limits"]["minute"]["count"] == 1  # type: ignore[index]
    assert client.swarms.get_logs()["count"] == 1
