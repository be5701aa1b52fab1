"""The API's contract as /openapi.json states it, checked against the routes themselves:
every route documents a typed response and, when it reads one, a typed request body;
every error status it documents carries OpenAI's error body; and the server keeps the
promises a client can test: one answer to bad JSON everywhere, 405s with `Allow`."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from support import ALL_SCOPES, Server

from batchgate.api import create_app
from batchgate.api.bodies import JsonBody
from batchgate.app import build_services
from batchgate.settings import Settings

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("contract")
    services = build_services(Settings(home=home, backend="scripted"))
    yield create_app(services)
    services.close()


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    with TestClient(app) as client:
        return client.get("/openapi.json").json()


def operations(app: FastAPI) -> Iterator[tuple[str, str, APIRoute]]:
    """(path, method, route) of every documented operation, as the app routes them."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema and context.path_format:
            for method in sorted(route.methods or ()):
                yield context.path_format, method.lower(), route


def reads_a_body(route: APIRoute) -> bool:
    """Whether the route takes a request body: a JsonBody, or the raw request (uploads)."""

    def json_body(dependant: Any) -> bool:
        return any(isinstance(d.call, JsonBody) or json_body(d) for d in dependant.dependencies)

    parameters = inspect.signature(route.endpoint).parameters.values()
    return json_body(route.dependant) or any(p.annotation in (Request, "Request") for p in parameters)


def test_every_route_documents_a_typed_response(app: FastAPI, document: dict[str, Any]) -> None:
    untyped = []
    for path, method, _ in operations(app):
        content = document["paths"][path][method]["responses"].get("200", {}).get("content", {})
        if not content or any(not media.get("schema") for media in content.values()):
            untyped.append(f"{method.upper()} {path}")
    assert not untyped, untyped


def test_every_route_that_reads_a_body_documents_it(app: FastAPI, document: dict[str, Any]) -> None:
    undocumented = []
    for path, method, route in operations(app):
        if method in ("post", "put", "patch") and reads_a_body(route):
            body = document["paths"][path][method].get("requestBody", {})
            schemas = [media.get("schema") for media in body.get("content", {}).values()]
            if not schemas or not all(schemas):
                undocumented.append(f"{method.upper()} {path}")
    assert not undocumented, undocumented


def test_error_statuses_are_documented_with_the_error_body(app: FastAPI, document: dict[str, Any]) -> None:
    wrong = []
    for path, method, _ in operations(app):
        for status, response in document["paths"][path][method]["responses"].items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if status.startswith(("4", "5")) and (path, status) != ("/ready", "503") and schema != ERROR_BODY:
                wrong.append(f"{method.upper()} {path} {status}: {response.get('content')}")
    assert not wrong, wrong
    assert "HTTPValidationError" not in document["components"]["schemas"]  # a bad parameter is a 400


def test_the_body_limit_and_a_full_disk_are_documented_wherever_they_can_be_answered(
    app: FastAPI, document: dict[str, Any]
) -> None:
    json_routes, writing = [], []
    for path, method, _ in operations(app):
        operation = document["paths"][path][method]
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            json_routes.append(f"{method.upper()} {path}")
            assert "413" in operation["responses"], f"{method.upper()} {path}: the body limit (api.limits.BodyGate)"
        if "507" in operation["responses"]:
            writing.append(f"{method.upper()} {path}")
    assert len(json_routes) > 20
    # routes that write files or rows before they answer, whichever module declares them
    for route in (
        "POST /v1/files",
        "DELETE /v1/files/{file_id}",
        "POST /v1/batches",
        "POST /v1/batches/{batch_id}/cancel",
        "POST /api/batches",
        "POST /v1/agent/batch/completions",
        "POST /v1/swarm/batch/completions",
        "POST /v1/responses",
        "DELETE /v1/responses/{response_id}",
        "POST /v1/prompts/{slug}/versions/{version}/publish",
    ):
        assert route in writing, route
    # reads, and synchronous calls that write nothing before they answer, do not claim it
    for route in ("GET /v1/batches", "POST /v1/chat/completions", "POST /api/completions/label"):
        assert route not in writing, route


def test_the_openai_routes_document_their_errors_parameters_and_bodies(document: dict[str, Any]) -> None:
    paths = document["paths"]
    chat = paths["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    # one event as OpenAPI 3.2 reads a stream: `data` is `[DONE]` or a chunk as JSON
    event = chat["responses"]["200"]["content"]["text/event-stream"]["schema"]
    json_data = event["properties"]["data"]["anyOf"][1]
    assert json_data["contentSchema"] == {"$ref": "#/components/schemas/ChatCompletionChunk"}
    assert {"400", "401", "404", "429", "502", "503", "504"} <= set(chat["responses"])
    assert {"401", "404", "409"} <= set(paths["/v1/batches/{batch_id}/cancel"]["post"]["responses"])
    content = paths["/v1/files/{file_id}/content"]["get"]["responses"]["200"]["content"]
    assert content == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    upload = paths["/v1/files"]["post"]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]
    files = {p["name"]: p["schema"] for p in paths["/v1/files"]["get"]["parameters"]}
    assert (files["limit"]["minimum"], files["limit"]["maximum"]) == (1, 10_000)
    assert files["order"]["enum"] == ["asc", "desc"]
    batches = {p["name"]: p["schema"] for p in paths["/v1/batches"]["get"]["parameters"]}
    assert (batches["limit"]["minimum"], batches["limit"]["maximum"]) == (1, 100)
    temperature = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]["temperature"]
    assert {"minimum": 0, "maximum": 2, "type": "number"} in temperature["anyOf"]


def test_bad_json_gets_the_same_answer_on_every_endpoint(
    app: FastAPI, document: dict[str, Any], server: Server
) -> None:
    key = server.create_key("p", *ALL_SCOPES)  # the admin routes too
    answers = {}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for path, method, _ in operations(app):
            body = document["paths"][path][method].get("requestBody", {}).get("content", {})
            if "application/json" in body:
                url = path.replace("{", "").replace("}", "")  # any id: the body is refused first
                r = client.request(method, url, content=b"{oops", headers={"Content-Type": "application/json"})
                answers[f"{method.upper()} {path}"] = (r.status_code, r.json()["error"]["code"])
    assert any(name.startswith("POST /api/") for name in answers)  # the operations routes too
    assert set(answers.values()) == {(400, "invalid_json")}, answers


def test_a_method_not_allowed_names_the_allowed_ones(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.create_key('p')}"}
    put = httpx.put(server.url + "/v1/files", headers=headers)
    assert put.status_code == 405 and put.headers["allow"] == "GET, POST"
    assert put.json()["error"]["code"] == "method_not_allowed"
    delete = httpx.delete(server.url + "/v1/batches/batch_x", headers=headers)
    assert delete.status_code == 405 and delete.headers["allow"] == "GET"


def test_invalid_parameters_are_400s_naming_them(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.create_key('p')}"}
    with httpx.Client(base_url=server.url + "/v1", headers=headers, timeout=30) as client:
        cases = [
            (client.get("/batches", params={"limit": 101}), "limit", "invalid_value"),
            (client.get("/files", params={"purpose": "fine-tune"}), "purpose", "invalid_value"),
            (
                client.post("/chat/completions", json={"messages": [{"role": "user"}]}),
                "model",
                "missing_required_parameter",
            ),
            (
                client.post("/chat/completions", json={"model": "m", "messages": [{"role": "robot"}]}),
                "messages[0].role",
                "invalid_value",
            ),
            (
                client.post("/embeddings", json={"model": "m", "input": "x", "dimensions": "8"}),
                "dimensions",
                "invalid_type",
            ),
            (client.post("/prompts", json={"slug": "s", "name": 7}), "name", "invalid_type"),
            (client.get("/prompts/s/versions/9223372036854775808"), "version", "invalid_value"),
        ]
    for response, param, code in cases:  # as OpenAI answers them, never a 422
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert error["code"] == code and error["message"]
