"""Request-scoped dependencies: the wired services and the caller's project."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from batchgate.api.errors import invalid_json
from batchgate.app import Services
from batchgate.core.errors import InvalidRequestError


def services(request: Request) -> Services:
    return request.app.state.services


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise invalid_json(str(exc)) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    return body


def project_id(request: Request) -> str:
    """The project of the caller's API key (or the default project without auth)."""
    svc = services(request)
    if svc.settings.insecure_no_auth:
        return request.app.state.default_project_id
    header = request.headers.get("authorization")
    if header is None and (api_key := request.headers.get("x-api-key")):
        header = f"Bearer {api_key}"  # Swarms clients send their key as x-api-key
    key = svc.keys.authenticate(header)
    return key.project_id
