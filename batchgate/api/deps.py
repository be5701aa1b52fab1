"""Request-scoped dependencies: the wired services and the caller's project."""

from __future__ import annotations

from fastapi import Request

from batchgate.app import Services


def services(request: Request) -> Services:
    return request.app.state.services


def project_id(request: Request) -> str:
    """The project of the caller's API key (or the default project without auth)."""
    svc = services(request)
    if svc.settings.insecure_no_auth:
        return request.app.state.default_project_id
    key = svc.keys.authenticate(request.headers.get("authorization"))
    return key.project_id
