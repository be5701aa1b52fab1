"""Retention through the official `openai` client: `expires_after` on an upload and
`output_expires_after` on a batch are reported as the files' `expires_at`; a bound
outside OpenAI's (1 hour to 30 days) is a 400 naming the field."""

from __future__ import annotations

import io
import time

import openai
import pytest
from openai import OpenAI
from support import TERMINAL, Server, chat_line, jsonl


def test_expiry_of_uploads_and_of_a_batchs_result_files(server: Server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key=server.create_key("retention"), max_retries=0)
    data = io.BytesIO(jsonl([chat_line("a"), chat_line("b", mock={"status": 400})]))
    file = client.files.create(
        file=("in.jsonl", data), purpose="batch", expires_after={"anchor": "created_at", "seconds": 7200}
    )
    assert file.expires_at == file.created_at + 7200
    assert client.files.retrieve(file.id).expires_at == file.expires_at
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    deadline = time.time() + 60
    while batch.status not in TERMINAL:
        assert time.time() < deadline
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    assert batch.output_file_id and batch.error_file_id
    for file_id in (batch.output_file_id, batch.error_file_id):
        result = client.files.retrieve(file_id)
        assert result.expires_at == result.created_at + 3600

    unbounded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line("a")]))), purpose="batch")
    assert unbounded.expires_at is None, "kept, without a default retention"
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(
            file=("in.jsonl", io.BytesIO(b"{}")), purpose="batch", expires_after={"anchor": "created_at", "seconds": 60}
        )
    assert refused.value.param == "expires_after.seconds"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 31 * 86_400},
        )
    assert refused.value.param == "output_expires_after.seconds"  # type: ignore[attr-defined]
