"""`client.agent` and `client.swarm` of the Python SDK against a real server (scripted backend)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import Server

from batchgate import AsyncClient, Client
from batchgate.sdk import JobManifestError, PayloadTooLargeError

CONFIG = {"agent_name": "Scorer", "model_name": "m"}


def records(n: int, prefix: str = "lead") -> list[dict[str, Any]]:
    return [{"agent_config": CONFIG, "task": f"{prefix} {i}"} for i in range(n)]


@pytest.fixture
def client(start_server: Callable[..., Server]) -> Client:
    server = start_server(env={"BATCHGATE_MAX_AGENT_BATCH": "50"})
    return Client(base_url=server.url, api_key=server.create_key("sdk"))


def test_completions_and_batches(client: Client) -> None:
    one = client.agent.completions.create(
        agent_config=CONFIG, task="hello", history=[{"role": "user", "content": "hi"}]
    )
    assert one.success and one.outputs[0].content == "echo: hello"

    done = client.agent.batch.completions.create(records(5), poll_interval=0.05)
    assert done.status == "completed" and [r.outputs[0].content for r in done.results] == [
        f"echo: lead {i}" for i in range(5)
    ]

    queued = client.agent.batch.completions.create(records(3), wait=False)
    assert queued.results == [] and queued.total_requests == 3
    finished = client.agent.batch.completions.wait(queued.batch_id, poll_interval=0.05, timeout=60)
    assert finished.completed_requests == 3
    assert queued.batch_id in [b.batch_id for b in client.agent.list_batches().data]

    with pytest.raises(PayloadTooLargeError, match="50"):
        client.agent.batch.completions.create(records(51))

    swarm = client.swarm.completions.create(agents=[CONFIG, CONFIG], task="t", swarm_type="ConcurrentWorkflow")
    assert swarm.status == "success" and swarm.number_of_agents == 2
    swarms = client.swarm.batch.completions.create(
        [{"agents": [CONFIG], "task": f"t{i}", "swarm_type": "SequentialWorkflow"} for i in range(2)],
        poll_interval=0.05,
    )
    assert [s.output[0]["content"] for s in swarms.results] == ["echo: t0", "echo: t1"]


def test_async_client(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server()
    key = server.create_key("sdk")

    async def main() -> None:
        async with AsyncClient(base_url=server.url, api_key=key) as client:
            one = await client.agent.completions.create(agent_config=CONFIG, task="hi")
            assert one.outputs[0].content == "echo: hi"
            done = await client.agent.batch.completions.create(records(3), poll_interval=0.05)
            assert [r.outputs[0].content for r in done.results] == [f"echo: lead {i}" for i in range(3)]
            chunks = client.agent.batch.completions.run_chunks(
                records(5), chunk_size=2, manifest=tmp_path / "m.json", poll_interval=0.05
            )
            assert [(i, len(b.results)) async for i, b in chunks] == [(0, 2), (1, 2), (2, 1)]
            swarm = await client.swarm.completions.create(agents=[CONFIG], task="t", swarm_type="MajorityVoting")
            assert swarm.output["answer"] == "echo: t"
            assert len((await client.agent.list_batches()).data) == 4

    asyncio.run(main())


def test_a_resent_submission_does_not_create_a_second_batch(client: Client) -> None:
    first = client.agent.batch.completions.create(records(2), wait=False, idempotency_key="k-1")
    again = client.agent.batch.completions.create(records(2), wait=False, idempotency_key="k-1")
    assert first.batch_id == again.batch_id


def test_chunks_resume_from_the_manifest_without_resubmitting(client: Client, tmp_path: Path) -> None:
    manifest = tmp_path / "job.json"
    leads = records(120)
    chunks = client.agent.batch.completions.run_chunks(leads, chunk_size=50, manifest=manifest, poll_interval=0.05)
    index, first = next(chunks)  # stop after the first chunk, as a killed run would
    assert index == 0 and len(first.results) == 50
    recorded = json.loads(manifest.read_text())["chunks"]
    assert len(recorded) == 3
    batches_before = len(client.agent.list_batches(limit=100).data)
    resumed = list(
        client.agent.batch.completions.run_chunks(leads, chunk_size=50, manifest=manifest, poll_interval=0.05)
    )
    assert len(client.agent.list_batches(limit=100).data) == batches_before, "nothing resubmitted"
    assert [b.batch_id for _, b in resumed] == [recorded[str(i)] for i in range(3)]
    contents = [r.outputs[0].content for _, b in resumed for r in b.results]
    assert contents == [f"echo: lead {i}" for i in range(120)]
    with pytest.raises(JobManifestError):
        next(client.agent.batch.completions.run_chunks(leads[:10], chunk_size=50, manifest=manifest))


def test_cli_agent_run_routes_unparseable_answers_to_review(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server()
    key = server.create_key("cli")
    leads = tmp_path / "leads.csv"
    leads.write_text('company,size\nAcme,500\n"Beta, Inc",20\nGamma,7\n')
    agent_file = tmp_path / "agent.json"
    # the echo backend answers "echo: ...", which is not the JSON this agent asks for
    agent_file.write_text(json.dumps({**CONFIG, "llm_args": {"response_format": {"type": "json_object"}}}))
    out, review = tmp_path / "out.jsonl", tmp_path / "review.jsonl"
    args = ["agent", "run", str(leads), "--agent", str(agent_file), "--task-template", "Score {company} ({size} staff)"]
    args += ["-o", str(out), "--review", str(review), "--chunk-size", "2", "--base-url", server.url, "--api-key", key]
    run = subprocess.run([sys.executable, "-m", "batchgate", *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "0 results" in run.stdout and "3 to review" in run.stdout
    rows = [json.loads(line) for line in review.read_text().splitlines()]
    assert [r["output"] for r in rows] == [
        "echo: Score Acme (500 staff)",
        "echo: Score Beta, Inc (20 staff)",
        "echo: Score Gamma (7 staff)",
    ]
    assert rows[1]["record"] == {"company": "Beta, Inc", "size": "20"} and rows[0]["parsed"] is None
    plain_agent = tmp_path / "plain.json"
    plain_agent.write_text(json.dumps(CONFIG))
    args[args.index(str(agent_file))] = str(plain_agent)
    args[args.index(str(out))] = str(tmp_path / "plain.jsonl")
    run = subprocess.run([sys.executable, "-m", "batchgate", *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "3 results" in run.stdout, run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "batchgate", *args[:6], "{nope}", *args[7:]], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no field 'nope'" in bad.stderr
