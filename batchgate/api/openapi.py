"""/openapi.json as the API really behaves: every request body, every response and every
error status typed with its protocol model.

Two things FastAPI cannot see for itself are filled in once the document is generated:
the request bodies that `JsonBody` reads after authentication (FastAPI documents only
bodies it reads itself), and the status of a request whose parameters do not validate,
which is OpenAI's 400 with an error body here, not FastAPI's 422.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel

from batchgate.api.bodies import JsonBody
from batchgate.protocol.errors import ErrorBody

REF = "#/components/schemas/{model}"

_MEANINGS = {
    400: "Invalid request: `param` names the parameter at fault, `code` says how.",
    401: "Missing, unknown or revoked API key (`invalid_api_key`).",
    403: "The key lacks the scope this route needs (`missing_scope`) or may not use the model (`model_not_allowed`).",
    404: "No such object in your project (`not_found`; objects of other projects are not found either).",
    409: "The object's current state forbids this.",
    413: "Too large (`file_too_large`, `too_many_items`, …).",
    429: "Rate limited by the upstream: the upstream's 429 with its `Retry-After`.",
    500: "An unexpected server error (`internal_error`).",
    502: "The backend answered with an error of its own (`upstream_error`) or gave no usable answer.",
    503: "The upstream could not be reached (`upstream_unreachable`), or the service is not ready.",
    504: "The upstream did not answer in time (`upstream_timeout`).",
    507: "The data dir's disk is full (`insufficient_storage`): nothing was written.",
}

# the statuses any route that reads a JSON body can answer because of the body: a bad
# one (400), or one over the size limit, refused by api.limits.BodyGate before the route
# runs (413); `install` documents them on every route with a JSON request body
JSON_BODY_ERRORS = (400, 413)
# the statuses of a synchronous call answered by a backend
BACKEND_ERRORS = (429, 502, 503, 504)
# the status of a request that writes to the data dir while its disk is full; `install`
# documents it on every route but GET and those in WRITES_NOTHING
STORAGE_ERRORS = (507,)
# routes that are not GET yet write nothing before they answer: synchronous model calls
# (metered after the answer is sent; also /api/completions/{operation}) and a prompt's
# batch lines, rendered into the answer
WRITES_NOTHING = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/agent/completions",
        "/v1/swarm/completions",
        "/v1/prompts/{slug}/jsonl",
    }
)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: each status with the OpenAI error body, as JSON
    whatever the route's own media type."""
    content = {"application/json": {"schema": model_schema(ErrorBody)}}
    return {status: {"description": _MEANINGS[status], "content": content} for status in statuses}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's schema for a place FastAPI does not fill itself (a streamed response, a
    body read by hand); the document gets it, and the models it uses, as components."""
    return model.model_json_schema(ref_template=REF)


def event_stream(model: type[BaseModel]) -> dict[str, Any]:
    """The `text/event-stream` content of a response whose `data:` events carry `model` as
    JSON (a chat or text stream ends with `data: [DONE]`). The schema describes one event,
    as OpenAPI 3.2 reads an event stream (and tools read 3.1 so): its `data` field is text,
    `contentSchema` the JSON in it."""
    json_data = {"type": "string", "contentMediaType": "application/json", "contentSchema": model_schema(model)}
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}},
    }
    return {"text/event-stream": {"schema": event}}


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for context in iter_route_contexts(app.routes):
                if isinstance(context.original_route, APIRoute):
                    _document_parameter_errors(context)
            document = generate()  # FastAPI caches it in app.openapi_schema: edited in place
            for route in iter_route_contexts(app.routes):
                if isinstance(route.original_route, APIRoute) and route.path_format:
                    _document_body(document, route.path_format, route.original_route)
            _document_shared_errors(document)
            _drop_validation_422(document)
            _hoist_schemas(document)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _document_parameter_errors(route: RouteContext) -> None:
    """A route with parameters FastAPI validates answers a bad one with a 400 (see
    api/errors.py), where FastAPI would document a 422. Set on the route as mounted (its
    responses merged with its router's), which is what the document is generated from."""
    if get_flat_params(route.dependant):
        route.responses.setdefault(400, error_responses(400)[400])


def _json_bodies(dependant: Dependant) -> Iterator[type[BaseModel]]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, JsonBody):
            yield dependency.call.model
        yield from _json_bodies(dependency)


def _document_body(document: dict[str, Any], path: str, route: APIRoute) -> None:
    for model in _json_bodies(route.dependant):
        for method in route.methods or ():
            operation = document["paths"][path][method.lower()]
            content = {"application/json": {"schema": model_schema(model)}}
            operation["requestBody"] = {"required": True, "content": content}


def _document_shared_errors(document: dict[str, Any]) -> None:
    """The statuses a route answers because of what it is, not what it does: those of a
    JSON body, and 507 on a route that writes. Documented here once, so that no route can
    leave them out."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses: list[int] = []
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                statuses += JSON_BODY_ERRORS
            writes_nothing = path in WRITES_NOTHING or path.startswith("/api/completions/")
            if method not in ("get", "head") and not writes_nothing:
                statuses += STORAGE_ERRORS
            for status in statuses:
                # by reference: the document already has the error body among its components
                content = {"application/json": {"schema": {"$ref": REF.format(model=ErrorBody.__name__)}}}
                response = {"description": _MEANINGS[status], "content": content}
                operation.setdefault("responses", {}).setdefault(str(status), response)


def _drop_validation_422(document: dict[str, Any]) -> None:
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", {})):
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _hoist_schemas(document: dict[str, Any]) -> None:
    """Model schemas placed inline (see `model_schema`) become components, referenced."""
    components = document.setdefault("components", {}).setdefault("schemas", {})

    def add(name: str, schema: dict[str, Any]) -> None:
        if components.setdefault(name, schema) != schema:
            raise RuntimeError(f"Two different models are named {name!r} in the OpenAPI document.")

    def hoisted(schema: Any) -> Any:
        if not isinstance(schema, dict) or "title" not in schema or "properties" not in schema:
            return schema  # a reference already, or not a model
        for name, definition in schema.pop("$defs", {}).items():
            add(name, definition)
        add(schema["title"], schema)
        return {"$ref": REF.format(model=schema["title"])}

    for path in document.get("paths", {}).values():
        for operation in path.values():
            places = [operation.get("requestBody", {}), *operation.get("responses", {}).values()]
            for media in (m for place in places for m in place.get("content", {}).values()):
                if "schema" not in media:
                    continue
                media["schema"] = schema = hoisted(media["schema"])
                for branch in schema.get("properties", {}).get("data", {}).get("anyOf", []):
                    if "contentSchema" in branch:  # an event stream's JSON events (see `event_stream`)
                        branch["contentSchema"] = hoisted(branch["contentSchema"])
