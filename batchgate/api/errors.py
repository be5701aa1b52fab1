"""Mapping of core errors to HTTP statuses and OpenAI error bodies. The only place that knows both."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from batchgate.core import errors

log = logging.getLogger("batchgate.api")

STATUS = {
    errors.InvalidRequestError: 400,
    errors.AuthenticationError: 401,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.PayloadTooLargeError: 413,
    errors.UnprocessableError: 422,
    errors.RateLimitError: 429,
    errors.BackendUnavailableError: 503,
}


def error_response(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def to_response(exc: errors.BatchgateError) -> JSONResponse:
    return error_response(STATUS.get(type(exc), 500), exc.message, exc.type, exc.param, exc.code)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.BatchgateError)
    async def batchgate_error(request: Request, exc: errors.BatchgateError) -> JSONResponse:
        return to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            return error_response(
                400,
                "The request body is not valid JSON.",
                "invalid_request_error",
                None,
                "invalid_json",
            )
        message = f"Invalid request body{f' at {param!r}' if param else ''}: {first.get('msg', 'invalid value')}."
        return error_response(422, message, "invalid_request_error", param, "invalid_request_body")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
        message = (
            f"Unknown endpoint: {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        )
        return error_response(exc.status_code, message, "invalid_request_error", None, code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "The server had an error processing your request.",
            "server_error",
            None,
            "internal_error",
        )
