"""Regression tests for what the schemathesis run (test_fuzz_openapi.py) found, each on a
real server: a crash on a `prompt` of the wrong type, a 500 when a file was deleted while
its content was being sent, statuses the document did not declare, and stream events the
document described wrongly."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import jsonschema
from support import Server


def client(server: Server) -> httpx.Client:
    key = server.create_key("p")
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_a_prompt_of_the_wrong_type_is_a_400_naming_it(server: Server) -> None:
    with client(server) as http:
        for prompt in (None, True, 7, {"a": 1}):
            r = http.post("/v1/completions", json={"model": "m", "prompt": prompt})
            assert r.status_code == 400, (prompt, r.text)
            assert r.json()["error"]["param"] == "prompt"


def race(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """The calls at once, from one thread each, released together."""
    answers: list[httpx.Response | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def test_a_file_deleted_while_its_content_is_read_is_never_a_500(server: Server) -> None:
    content = b"x" * 300_000
    with client(server) as http:
        for _ in range(40):
            upload = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("f.jsonl", content)})
            url = f"/v1/files/{upload.json()['id']}"
            read, delete = race(partial(http.get, url + "/content"), partial(http.delete, url))
            assert delete.status_code == 200
            # read before the delete, or after it: the whole file or not found, nothing between
            assert read.status_code in (200, 404), read.text
            if read.status_code == 200:
                assert read.content == content


def test_every_route_with_parameters_documents_its_400(server: Server) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("parameters") and "400" not in operation["responses"]
    ]
    assert not missing, missing
    for path, operations in document["paths"].items():
        if path.startswith("/api/"):  # the operations routes: a key, and the error body
            for operation in operations.values():
                assert {"401", "500"} <= set(operation["responses"]), path
    with client(server) as http:
        r = http.get("/api/batches", params={"limit": "null"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_stream_events_match_the_documented_event_schema(server: Server) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    responses = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    event_schema = responses["200"]["content"]["text/event-stream"]["schema"]
    json_data = event_schema["properties"]["data"]["anyOf"][1]
    chunk_schema = {**json_data["contentSchema"], "components": document["components"]}
    body = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    with client(server) as http:
        text = http.post("/v1/chat/completions", json=body).text
    events: list[dict[str, Any]] = [{"data": line[6:]} for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == {"data": "[DONE]"} and len(events) > 2
    for event in events:
        jsonschema.validate(event, {k: v for k, v in event_schema.items()})
        if event["data"] != "[DONE]":
            jsonschema.validate(json.loads(event["data"]), chunk_schema)
