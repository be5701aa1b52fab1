"""Request-scoped dependencies: the wired services and the caller's project."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from batchgate.api.errors import invalid_json
from batchgate.api.metering import METERED_PATHS
from batchgate.api.nesting import check_nesting
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
    check_nesting(body)
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    return body


# declared for /openapi.json only (auto_error=False: the key is checked by KeyService,
# which answers in OpenAI's error shape); either header carries the key
BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
API_KEY_HEADER = APIKeyHeader(name="x-api-key", auto_error=False, description="An API key (Swarms clients).")


def credentials(headers: Headers) -> str | None:
    """The `Authorization` header value the key is checked from."""
    header = headers.get("authorization")
    if header is None and (api_key := headers.get("x-api-key")):
        header = f"Bearer {api_key}"  # Swarms clients send their key as x-api-key
    return header


def project_id(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    _api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
) -> str:
    """The project of the caller's API key (or the default project without auth)."""
    svc = services(request)
    if svc.settings.insecure_no_auth:
        return request.app.state.default_project_id
    # a request with a body was authenticated before it was read (api.limits.BodyGate)
    key = getattr(request.state, "api_key", None) or svc.keys.authenticate(credentials(request.headers))
    svc.keys.authorize(key, required_scope(request.method, request.url.path))
    request.state.api_key = key
    return key.project_id


def visible_project(request: Request, project: Annotated[str, Depends(project_id)]) -> str | None:
    """The project whose ledger the caller may read: its own, or (None) every project for
    an `admin` key and a server without auth."""
    key = getattr(request.state, "api_key", None)
    return None if key is None or "admin" in key.scopes else project


def required_scope(method: str, path: str) -> str:
    """The scope a route group needs: `admin` for /v1/admin, `read` for every other read,
    `sync` for the synchronous model endpoints (and deleting a stored response), `batch`
    for every other write (files, batches, operation and agent batches, prompts)."""
    if path == "/v1/admin" or path.startswith("/v1/admin/"):
        return "admin"
    if method in ("GET", "HEAD"):
        return "read"
    return "sync" if path in METERED_PATHS or path.startswith("/v1/responses") else "batch"
