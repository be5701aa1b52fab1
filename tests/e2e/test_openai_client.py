"""The official `openai` client, unchanged, against a real batchgate server."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import openai
import pytest
from openai import OpenAI
from support import TERMINAL, Server, chat_line, jsonl, parse_jsonl


def make_client(server: Server, key: str) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def wait(client: OpenAI, batch_id: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        assert time.time() < deadline, f"batch still {batch.status}"
        time.sleep(0.05)


def upload(client: OpenAI, rows: list) -> str:
    return client.files.create(file=("input.jsonl", io.BytesIO(jsonl(rows))), purpose="batch").id


@pytest.fixture
def client(server: Server) -> OpenAI:
    return make_client(server, server.create_key("e2e"))


def test_full_batch_round_trip(client: OpenAI) -> None:
    rows = [chat_line(f"req-{i}", f"item {i}") for i in range(25)]
    rows += [chat_line("rejected", mock={"status": 400}), chat_line("crashed", mock={"fail": "upstream exploded"})]
    file = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    assert file.purpose == "batch" and file.bytes == len(jsonl(rows)) and file.filename == "input.jsonl"
    assert client.files.retrieve(file.id).id == file.id
    assert client.files.content(file.id).content == jsonl(rows)

    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"team": "growth"}
    )
    assert batch.status == "validating" and batch.id.startswith("batch_") and batch.metadata == {"team": "growth"}
    assert batch.expires_at == batch.created_at + 24 * 3600
    batch = wait(client, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (27, 25, 2)
    assert (
        batch.usage is not None and batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens > 0
    )
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.output_file_id and batch.error_file_id

    output = parse_jsonl(client.files.content(batch.output_file_id).content)
    assert [r["custom_id"] for r in output] == [f"req-{i}" for i in range(25)]
    assert output[3]["response"]["body"]["choices"][0]["message"]["content"] == "echo: item 3"
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in output)
    errors = {r["custom_id"]: r for r in parse_jsonl(client.files.content(batch.error_file_id).content)}
    assert errors["rejected"]["response"]["status_code"] == 400
    assert errors["crashed"]["error"] == {"code": "backend_error", "message": "upstream exploded"}
    out_file = client.files.retrieve(batch.output_file_id)
    assert out_file.purpose == "batch_output"


def test_list_and_paginate(client: OpenAI) -> None:
    file_id = upload(client, [chat_line("a")])
    created = [
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2]
    assert page.has_more and page.last_id == created[3]
    assert [b.id for b in client.batches.list(limit=2, after=page.last_id).data] == [created[2], created[1]]
    assert [b.id for b in client.batches.list(limit=2)][:5] == created[::-1]  # auto-paging iterator

    more = [upload(client, [chat_line(str(i))]) for i in range(3)]
    files = client.files.list(purpose="batch", limit=2, order="asc")
    assert [f.id for f in files.data] == [file_id, more[0]]
    assert [f.id for f in client.files.list(purpose="batch", order="asc")] == [file_id, *more]
    for b in created:
        wait(client, b)


def test_cancel_keeps_partial_output(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_CONCURRENCY": "4"})
    client = make_client(server, server.create_key("p"))
    rows = [chat_line(f"r{i}", mock={"sleep": 0.1}) for i in range(100)]
    batch = client.batches.create(
        input_file_id=upload(client, rows), endpoint="/v1/chat/completions", completion_window="24h"
    )
    while client.batches.retrieve(batch.id).request_counts.completed < 8:  # type: ignore[union-attr]
        time.sleep(0.05)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch = wait(client, batch.id, timeout=10)
    assert batch.status == "cancelled" and batch.cancelled_at
    output = parse_jsonl(client.files.content(batch.output_file_id).content)  # type: ignore[arg-type]
    errors = parse_jsonl(client.files.content(batch.error_file_id).content)  # type: ignore[arg-type]
    assert len(output) >= 8
    assert {r["error"]["code"] for r in errors} == {"batch_cancelled"}
    assert sorted(r["custom_id"] for r in output + errors) == sorted(f"r{i}" for i in range(100))
    assert batch.request_counts.completed == len(output) and batch.request_counts.failed == len(errors)  # type: ignore[union-attr]
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_expiry_with_a_short_window(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_CONCURRENCY": "2"})
    client = make_client(server, server.create_key("p"))
    rows = [chat_line(f"r{i}", mock={"sleep": 0.2}) for i in range(50)]
    batch = client.batches.create(
        input_file_id=upload(client, rows), endpoint="/v1/chat/completions", completion_window="2s"
    )
    batch = wait(client, batch.id, timeout=20)
    assert batch.status == "expired" and batch.expired_at
    output = parse_jsonl(client.files.content(batch.output_file_id).content)  # type: ignore[arg-type]
    errors = parse_jsonl(client.files.content(batch.error_file_id).content)  # type: ignore[arg-type]
    assert output and {r["error"]["code"] for r in errors} == {"batch_expired"}
    assert len(output) + len(errors) == 50


def test_project_isolation_and_errors(server: Server) -> None:
    alice = make_client(server, server.create_key("alice"))
    bob = make_client(server, server.create_key("bob"))
    file_id = upload(alice, [chat_line("x")])
    batch = alice.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.AuthenticationError):
        make_client(server, "bg-not-a-key").files.list()
    with pytest.raises(openai.BadRequestError) as info:
        alice.batches.create(input_file_id=file_id, endpoint="/v1/images/generations", completion_window="24h")  # type: ignore[arg-type]
    assert info.value.param == "endpoint" and info.value.code == "invalid_value"
    wait(alice, batch.id)
    alice.files.delete(file_id)
    with pytest.raises(openai.NotFoundError):
        alice.files.retrieve(file_id)


def test_embeddings_batch(client: OpenAI) -> None:
    rows = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "emb", "input": f"text {i}"},
        }
        for i in range(5)
    ]
    batch = client.batches.create(input_file_id=upload(client, rows), endpoint="/v1/embeddings", completion_window="1h")
    batch = wait(client, batch.id)
    output = parse_jsonl(client.files.content(batch.output_file_id).content)  # type: ignore[arg-type]
    assert len(output) == 5 and output[0]["response"]["body"]["object"] == "list"


def test_synchronous_chat_and_streaming(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "hello there world"}]
    plain = client.chat.completions.create(model="any-model", messages=messages)  # type: ignore[arg-type]
    assert plain.choices[0].message.content == "echo: hello there world"
    stream = client.chat.completions.create(model="any-model", messages=messages, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello there world"
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="", messages=messages)  # type: ignore[arg-type]
    assert info.value.param == "model"
