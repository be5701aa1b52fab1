"""Malformed input is a 400 naming the parameter, never a 500 or a 200 that aborts
(issue 11 #7), on a real server: absurd completion windows, JSON nested past what the
gateway can write back, 10**23 offsets and limits, prompt versions past 2**63 - 1."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from support import Server

from batchgate.api.nesting import MAX_DEPTH

HUGE = 10**23
PAST_INT64 = 2**63


@pytest.fixture
def http(server: Server) -> httpx.Client:
    key = server.create_key("p")
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def refused(response: httpx.Response, param: str | None, code: str = "invalid_value") -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error


def nested(depth: int) -> Any:
    """An object `depth` levels deep."""
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def json_routes(server: Server) -> list[tuple[str, str]]:
    """The routes that read a JSON body, but the admin ones: the test key lacks the admin
    scope, so those answer 403 before they read a body at all."""
    document = httpx.get(server.url + "/openapi.json").json()
    return [
        (method, path.replace("{", "").replace("}", ""))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
        and not path.startswith("/v1/admin/")
    ]


def test_a_completion_window_of_5000_digits(http: httpx.Client) -> None:
    upload = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", b"{}\n")})
    window = "9" * 5000 + "h"
    body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": window}
    refused(http.post("/v1/batches", json=body), "completion_window")
    body = {"operation": "summarize", "items": [{"content": "a"}], "completion_window": window}
    refused(http.post("/api/batches", json=body), "completion_window")


def test_json_nested_100000_deep_on_every_json_route(server: Server, http: httpx.Client) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    routes = json_routes(server)
    assert ("post", "/v1/chat/completions") in routes and ("post", "/v1/embeddings") in routes
    for method, path in routes:
        for body in (deep, b'{"model": ' + deep + b"}"):
            r = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
            refused(r, None, "invalid_json")


def test_json_nested_past_what_the_gateway_writes_names_the_field(server: Server, http: httpx.Client) -> None:
    # readable JSON (orjson reads 1,024 levels) that could not be written back (254)
    schema = nested(400)
    extract = {"items": [{"content": "a"}], "schema": schema, "extraction_instructions": "x"}
    refused(http.post("/api/completions/extract", json=extract), "schema")
    refused(http.post("/api/batches", json={"operation": "extract", **extract}), "schema")
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    refused(http.post("/v1/chat/completions", json={**chat, "extra": nested(MAX_DEPTH)}), "extra")
    agents = [{"agent_config": {"agent_name": "a", "model_name": "m"}, "task": nested(300)}]
    refused(http.post("/v1/agent/batch/completions", json=agents), "[0]")
    for method, path in json_routes(server):  # the same answer everywhere
        r = http.request(method, path, json={"deep": nested(300)})
        refused(r, "deep")
    # as deep as allowed is fine
    ok = http.post("/v1/chat/completions", json={**chat, "extra": nested(MAX_DEPTH - 2)})
    assert ok.status_code == 200, ok.text


def test_output_offset_and_limit_of_10_23(http: httpx.Client) -> None:
    batch = http.post("/api/batches", json={"operation": "summarize", "items": [{"content": "a"}]}).json()
    url = f"/api/batches/{batch['batch_id']}/output"
    deadline = time.time() + 60
    while http.get(f"/api/batches/{batch['batch_id']}").json()["status"] != "completed":
        assert time.time() < deadline
        time.sleep(0.1)
    for fmt in ("json", "jsonl", "csv"):
        refused(http.get(url, params={"format": fmt, "offset": HUGE}), "offset")
        refused(http.get(url, params={"format": fmt, "limit": HUGE}), "limit")
    assert http.get(url, params={"format": "csv", "offset": 0, "limit": 1}).status_code == 200


def test_prompt_versions_past_int64_in_paths_and_bodies(http: httpx.Client) -> None:
    created = http.post(
        "/v1/prompts", json={"slug": "s", "name": "n", "messages": [{"role": "user", "content": "{{x}}"}]}
    )
    assert created.status_code == 200, created.text
    refused(http.get(f"/v1/prompts/s/versions/{PAST_INT64}"), "version")
    refused(http.post(f"/v1/prompts/s/versions/{PAST_INT64}/publish"), "version")
    refused(http.post("/v1/prompts/s/jsonl", json={"version": PAST_INT64, "variables": [{"x": "1"}]}), "version")
    assert http.get(f"/v1/prompts/s/versions/{PAST_INT64 - 1}").status_code == 404
