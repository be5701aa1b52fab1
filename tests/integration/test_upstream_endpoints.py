"""Batches on any endpoint an upstream serves: lines of models routed to an upstream are
forwarded as they are (here /v1/moderations, to a real HTTP server), with usage when the
answer carries it; the local engine answers each line of an endpoint it does not
implement with a 400 naming the url; a malformed endpoint is refused."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from aiohttp import web
from openai import OpenAI
from support import TERMINAL, Server, jsonl, parse_jsonl
from upstreams import BackgroundApp


async def moderations(request: web.Request) -> web.Response:
    body = await request.json()
    flagged = "attack" in body["input"]
    return web.json_response(
        {
            "id": "modr-1",
            "model": body["model"],
            "results": [{"flagged": flagged, "categories": {"violence": flagged}}],
            "usage": {"input_tokens": len(body["input"].split()), "output_tokens": 0},
        }
    )


@pytest.fixture
def upstream() -> Iterator[BackgroundApp]:
    app = web.Application()
    app.router.add_post("/v1/moderations", moderations)
    with BackgroundApp(app) as server:
        yield server


def test_a_moderations_batch_is_forwarded_to_the_upstream(
    start_server: Callable[..., Server], tmp_path: Path, upstream: BackgroundApp
) -> None:
    config = tmp_path / "batchgate.toml"
    config.write_text(
        f'[backends.mod]\nbase_url = "{upstream.url}/v1"\n\n'
        '[models.omni-moderation-latest]\nbackend = "mod"\n\n'
        '[models.smollm2-135m]\nbackend = "local"\n'
    )
    env = {"BATCHGATE_CONFIG": str(config), "BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": "smollm2-135m"}
    server = start_server(env, insecure=True)
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

    def line(custom_id: str, model: str, text: str) -> dict:
        body = {"model": model, "input": text}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/moderations", "body": body}

    rows = [
        line("calm", "omni-moderation-latest", "a quiet walk in the park"),
        line("angry", "omni-moderation-latest", "plan the attack"),
        line("local", "smollm2-135m", "not served here"),
    ]
    file = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    deadline = time.time() + 60
    while batch.status not in TERMINAL:
        assert time.time() < deadline, batch.status
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.endpoint == "/v1/moderations"
    assert batch.request_counts is not None and (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    assert batch.usage is not None and batch.usage.input_tokens == 6 + 3, "usage from the answers' usage"
    assert batch.output_file_id and batch.error_file_id
    output = {r["custom_id"]: r["response"] for r in parse_jsonl(client.files.content(batch.output_file_id).content)}
    assert output["angry"]["status_code"] == 200 and output["angry"]["body"]["results"][0]["flagged"] is True
    assert output["calm"]["body"]["results"][0]["flagged"] is False
    assert output["calm"]["body"]["model"] == "omni-moderation-latest"
    (error,) = parse_jsonl(client.files.content(batch.error_file_id).content)
    assert error["custom_id"] == "local" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "url"
    assert "/v1/moderations" in error["response"]["body"]["error"]["message"]

    # never a path out of /v1, nor the upstream's own files and batches (the gateway's credentials)
    for endpoint in ("/v1/../admin", "/v2/moderations", "/v1/batches", "/v1/files/file-1/content"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
        assert refused.value.param == "endpoint"  # type: ignore[attr-defined]
