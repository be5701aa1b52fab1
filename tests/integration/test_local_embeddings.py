"""Embeddings with all-MiniLM-L6-v2 on CPU torch: through the backend, a batch, and the API."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
from support import Server, answer, jsonl, parse_jsonl, wait_for

from batchgate.core.ports import BackendRequest
from batchgate.engines.local.backend import LocalBackend
from batchgate.engines.local.catalog import ModelCatalog

MODEL = "all-minilm-l6-v2"


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_backend(tmp_path: Path) -> None:
    backend = LocalBackend(ModelCatalog(tmp_path), default_model="smollm2-135m")
    texts = ["The cat sat on the mat.", "A kitten rests on a rug.", "Quarterly revenue fell by ten percent."]

    async def run() -> tuple:
        try:
            floats = await backend.execute(BackendRequest("a", "/v1/embeddings", {"model": MODEL, "input": texts}))
            b64 = await backend.execute(
                BackendRequest("b", "/v1/embeddings", {"model": MODEL, "input": texts[0], "encoding_format": "base64"})
            )
            wrong = await answer(backend, BackendRequest("c", "/v1/embeddings", {"model": "ada", "input": "x"}))
            empty = await answer(backend, BackendRequest("d", "/v1/embeddings", {"model": MODEL, "input": []}))
            dims = await answer(
                backend, BackendRequest("e", "/v1/embeddings", {"model": MODEL, "input": "x", "dimensions": 8})
            )
            return floats, b64, wrong, empty, dims
        finally:
            await backend.aclose()

    floats, b64, wrong, empty, dims = asyncio.run(run())
    vectors = [d["embedding"] for d in floats.body["data"]]
    assert [d["index"] for d in floats.body["data"]] == [0, 1, 2] and all(len(v) == 384 for v in vectors)
    assert all(abs(dot(v, v) - 1) < 1e-4 for v in vectors)  # normalized
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.2  # similar texts are closer
    assert floats.input_tokens == floats.body["usage"]["prompt_tokens"] > 3 * 4
    decoded = struct.unpack("<384f", base64.b64decode(b64.body["data"][0]["embedding"]))
    assert max(abs(x - y) for x, y in zip(decoded, vectors[0], strict=True)) < 1e-5
    assert wrong.status_code == 404 and wrong.body["error"]["code"] == "model_not_found"
    assert empty.status_code == 400 and empty.body["error"]["param"] == "input"
    assert dims.status_code == 400 and dims.body["error"]["param"] == "dimensions"


def test_an_embedding_batch_and_the_synchronous_endpoint(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_BACKEND": "local"}, insecure=True)
    c = httpx.Client(base_url=server.url + "/v1", timeout=60)
    rows = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": f"review number {i}"},
        }
        for i in range(40)
    ]
    file_id = c.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    batch_id = c.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings"}).json()["id"]
    batch = wait_for(lambda: (b := c.get(f"/batches/{batch_id}").json())["status"] == "completed" and b, 120, 0.2)
    assert batch["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    output = parse_jsonl(c.get(f"/files/{batch['output_file_id']}/content").content)
    assert all(len(r["response"]["body"]["data"][0]["embedding"]) == 384 for r in output)

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    response = client.embeddings.create(model=MODEL, input=["first", "second"])  # the SDK asks for base64
    assert [len(d.embedding) for d in response.data] == [384, 384]
    assert MODEL in {m.id for m in client.models.list()}
