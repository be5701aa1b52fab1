"""Retry, pause and resume (extensions of /v1/batches) on a real server, through the
official `openai` client (its generic `post` for the extension routes; the Batch objects
they return parse as its own `Batch`), the SDK and the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import openai
import pytest
from openai import OpenAI
from openai.types import Batch
from support import TERMINAL, Server, chat_line, jsonl, parse_jsonl, wait_for

from batchgate.sdk import Client


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    # two lines at a time: a batch of slow lines is still running when the test pauses it
    return start_server({"BATCHGATE_CONCURRENCY": "2"})


@pytest.fixture
def key(server: Server) -> str:
    return server.create_key("lifecycle")


@pytest.fixture
def client(server: Server, key: str) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def create(client: OpenAI, rows: list[dict], **extra: object) -> Batch:
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch").id
    return client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **extra,  # type: ignore[arg-type]
    )


def wait(client: OpenAI, batch_id: str) -> Batch:
    return wait_for(lambda: (b := client.batches.retrieve(batch_id)).status in TERMINAL and b, 30)


def action(client: OpenAI, batch_id: str, name: str) -> Batch:
    return client.post(f"/batches/{batch_id}/{name}", cast_to=Batch)


def test_retry_runs_only_the_failed_lines_again_linked_both_ways(client: OpenAI) -> None:
    # fails transiently 4 times: the first batch gives up after 3 attempts; the retry succeeds
    rows = [chat_line("ok-1"), chat_line("flaky", mock={"transient_failures": 4}), chat_line("ok-2")]
    rows += [chat_line("rejected", mock={"status": 400})]
    first = create(client, rows, metadata={"team": "growth"})
    with pytest.raises(openai.ConflictError) as running:
        action(client, first.id, "retry")
    assert running.value.code == "batch_not_finished"
    first = wait(client, first.id)
    assert first.request_counts is not None and (first.request_counts.completed, first.request_counts.failed) == (2, 2)

    retry = action(client, first.id, "retry")
    assert retry.status == "validating" and retry.metadata == {"team": "growth", "retry_of": first.id}
    assert retry.endpoint == first.endpoint and retry.completion_window == first.completion_window
    sent = parse_jsonl(client.files.content(retry.input_file_id).content)
    assert [r["custom_id"] for r in sent] == ["flaky", "rejected"]
    assert sent == [rows[1], rows[3]], "the input lines as they were"
    original = client.batches.retrieve(first.id)
    assert original.metadata == {"team": "growth", "retried_by": retry.id}

    retry = wait(client, retry.id)
    assert retry.status == "completed" and retry.request_counts is not None
    assert (retry.request_counts.total, retry.request_counts.completed, retry.request_counts.failed) == (2, 1, 1)
    assert retry.output_file_id and retry.error_file_id
    assert [r["custom_id"] for r in parse_jsonl(client.files.content(retry.output_file_id).content)] == ["flaky"]
    assert [r["custom_id"] for r in parse_jsonl(client.files.content(retry.error_file_id).content)] == ["rejected"]

    with pytest.raises(openai.ConflictError) as again:
        action(client, first.id, "retry")
    assert again.value.code == "batch_already_retried"
    clean = wait(client, create(client, [chat_line("fine")]).id)
    with pytest.raises(openai.ConflictError) as nothing:
        action(client, clean.id, "retry")
    assert nothing.value.code == "no_failed_lines"
    with pytest.raises(openai.NotFoundError):
        action(client, "batch_nope", "retry")


def test_a_paused_batch_runs_no_line_until_resumed_and_keeps_its_window(client: OpenAI) -> None:
    batch = create(client, [chat_line(f"r{i}", mock={"sleep": 0.3}) for i in range(10)])  # >= 1.5 s of work
    paused = action(client, batch.id, "pause")
    assert paused.status in ("validating", "in_progress") and getattr(paused, "paused_at", None)
    assert paused.expires_at == batch.expires_at
    wait_for(lambda: client.batches.retrieve(batch.id).status == "in_progress", 30)
    time.sleep(1.0)  # lines that were running when it paused have finished
    done_then = client.batches.retrieve(batch.id).request_counts
    time.sleep(1.0)  # workers poll every 20 ms: they had every chance to claim more
    held = client.batches.retrieve(batch.id)
    assert held.request_counts is not None and done_then is not None
    # lines a worker had claimed when the pause came finish: its 2 slots plus the chunk it
    # claims ahead of them (min(claim_batch, concurrency) = 2); nothing is claimed after
    assert held.request_counts.completed == done_then.completed <= 4, "only lines already claimed finished"
    assert held.status == "in_progress" and held.paused_at == paused.paused_at  # type: ignore[attr-defined]
    assert held.expires_at == batch.expires_at, "the window is absolute: a pause does not move it"
    assert action(client, batch.id, "pause").paused_at == paused.paused_at  # type: ignore[attr-defined]

    resumed = action(client, batch.id, "resume")
    assert resumed.paused_at is None  # type: ignore[attr-defined]
    done = wait(client, batch.id)
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 10
    with pytest.raises(openai.ConflictError) as finished:
        action(client, batch.id, "pause")
    assert finished.value.code == "batch_not_pausable"
    with pytest.raises(openai.ConflictError):
        action(client, batch.id, "resume")


def test_a_paused_batch_can_be_cancelled(client: OpenAI) -> None:
    rows = [chat_line(f"s{i}", mock={"sleep": 1.0}) for i in range(3)]
    batch = create(client, rows)
    wait_for(lambda: client.batches.retrieve(batch.id).status == "in_progress", 30)
    time.sleep(0.3)  # its lines are running now
    action(client, batch.id, "pause")
    client.batches.cancel(batch.id)
    done = wait(client, batch.id)
    assert done.status == "cancelled" and getattr(done, "paused_at", None) is None
    assert done.request_counts is not None and done.request_counts.total == 3


def test_sdk_and_cli(server: Server, key: str, client: OpenAI) -> None:
    first = create(client, [chat_line("ok", mock={"sleep": 2}), chat_line("bad", mock={"status": 400})])
    with Client(server.url, key) as sdk:
        paused = sdk.batches.pause(first.id)
        assert paused["paused_at"] and paused["id"] == first.id
        assert sdk.batches.resume(first.id)["paused_at"] is None
        wait(client, first.id)
        hook = sdk.webhooks.create("https://example.com/hook", events=["batch.failed"])
        assert hook["secret"].startswith("whsec_")
        assert [h["id"] for h in sdk.webhooks.list()] == [hook["id"]]
        assert sdk.webhooks.deliveries(hook["id"]) == []
        sdk.webhooks.delete(hook["id"])
    env = {**os.environ, "BATCHGATE_BASE_URL": server.url, "BATCHGATE_API_KEY": key}

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "batchgate", *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    retry = json.loads(cli("batches", "retry", first.id, "--json"))
    assert retry["metadata"] == {"retry_of": first.id} and retry["status"] == "validating"
    slow = create(client, [chat_line("s", mock={"sleep": 30})])
    assert "(paused)" in cli("batches", "pause", slow.id)
    assert json.loads(cli("batches", "resume", slow.id, "--json"))["paused_at"] is None
    client.batches.cancel(slow.id)
