"""Errors to HTTP responses: the only place that knows both. Every error body is OpenAI's
`{"error": {"message", "type", "param", "code"}}` (protocol/errors.py), with its status
from the error itself (core/errors.py)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException

from batchgate.core import errors
from batchgate.protocol.errors import ErrorBody, ErrorDetail

log = logging.getLogger("batchgate.api")

# where a request's parameter was found; pydantic puts it first in an error's location
_SOURCES = ("body", "query", "path", "header", "cookie")


def to_response(exc: errors.BatchgateError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after is not None:
        # both forms, as OpenAI sends them: its clients read the exact milliseconds first
        headers["Retry-After"] = str(math.ceil(exc.retry_after))
        headers["retry-after-ms"] = str(int(exc.retry_after * 1000))
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def invalid_request(problems: Sequence[Any], in_body: bool = False) -> errors.InvalidRequestError:
    """The 400 for a request whose parameters did not validate (pydantic's error list),
    naming the first parameter at fault the way OpenAI does: `messages[0].role`."""
    problem = problems[0] if problems else {}
    loc = list(problem.get("loc", ()))
    if loc and loc[0] in _SOURCES and not in_body:
        loc = loc[1:]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
    kind, detail = str(problem.get("type", "")), str(problem.get("msg", "invalid value"))
    if kind == "json_invalid":
        return invalid_json()
    if kind == "missing":
        return errors.InvalidRequestError(
            f"Missing required parameter '{param}'.", param=param, code="missing_required_parameter"
        )
    if not param:
        return errors.InvalidRequestError(f"Invalid request: {detail}.", code="invalid_type")
    if kind.endswith("_type") or kind in ("model_attributes_type", "is_instance_of"):
        return errors.InvalidRequestError(f"Invalid type for '{param}': {detail}.", param=param, code="invalid_type")
    return errors.InvalidRequestError(f"Invalid value for '{param}': {detail}.", param=param, code="invalid_value")


def invalid_json(reason: str | None = None) -> errors.InvalidRequestError:
    """The one answer to a body that is not JSON, on every endpoint."""
    detail = f" ({reason})" if reason else ""
    return errors.InvalidRequestError(f"The request body is not valid JSON{detail}.", code="invalid_json")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes on this path (the router's own 405 names only the
    first route's, though GET and POST /v1/files are two routes)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.BatchgateError)
    async def batchgate_error(request: Request, exc: errors.BatchgateError) -> JSONResponse:
        return to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return to_response(invalid_request(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own refusals: no route for the path, or not for this method
        code, message, headers = None, str(exc.detail), dict(exc.headers or {})
        if exc.status_code == 404:
            code, message = "not_found", f"Unknown endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
            code = "method_not_allowed"
            message = f"Method {request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}."
        body = ErrorBody(error=ErrorDetail(message=message, type="invalid_request_error", code=code))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return to_response(errors.BatchgateError("The server had an error processing your request."))
