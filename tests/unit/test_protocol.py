"""Wire models: the values they document match core's, and their JSON is OpenAI's."""

from __future__ import annotations

from typing import get_args

import orjson
import pytest
from pydantic import ValidationError

from batchgate.core.models import FilePurpose
from batchgate.core.states import BatchStatus
from batchgate.protocol import chat, openai


def test_documented_values_are_cores() -> None:
    assert set(get_args(openai.BatchStatus)) == {s.value for s in BatchStatus}
    assert set(get_args(openai.FilePurpose)) == {p.value for p in FilePurpose}


def test_stream_chunks_carry_only_what_they_add() -> None:
    def chunk(**fields: object) -> dict:
        return orjson.loads(chat.ChatCompletionChunk(id="c", created=1, model="m", **fields).model_dump_json())

    text = chunk(choices=[chat.ChatCompletionChunkChoice(index=0, delta=chat.ChoiceDelta(content="Hi"))])
    assert text["choices"][0]["delta"] == {"content": "Hi"} and "usage" not in text
    last = chunk(choices=[], usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    assert last["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_requests_keep_unknown_fields_and_refuse_wrong_types() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "service_tier": "flex"}
    parsed = chat.ChatCompletionRequest.model_validate(body)
    assert parsed.model_dump(exclude_unset=True) == body  # passed on as sent
    with pytest.raises(ValidationError):
        chat.ChatCompletionRequest.model_validate({**body, "max_tokens": "10"})  # JSON types are strict
    with pytest.raises(ValidationError):
        # any /v1/ endpoint may be an upstream's (issue 17), never a path out of /v1
        openai.BatchCreate.model_validate({"input_file_id": "f", "endpoint": "/v1/../images"})
