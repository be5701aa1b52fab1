"""/v1/admin: create, list, show, update and revoke API keys; list and create projects, and
set whether a project's request logs keep bodies. Only keys with the `admin` scope
(`api.deps.required_scope`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from batchgate.api.bodies import JsonBody
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import JSON_BODY_ERRORS, error_responses
from batchgate.app import Services
from batchgate.core.bodies import BodySettings
from batchgate.core.errors import NotFoundError
from batchgate.core.models import ApiKey, Project, RateLimit
from batchgate.protocol import admin as wire

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=error_responses(401, 403, 500))

Caller = Annotated[str, Depends(project_id)]  # authenticates and checks the admin scope
Svc = Annotated[Services, Depends(services)]


def key_object(key: ApiKey, secret: str | None = None) -> wire.ApiKeyObject:
    return wire.ApiKeyObject(
        id=key.id,
        name=key.name,
        project_id=key.project_id,
        project=key.project_name,
        prefix=key.prefix,
        scopes=list(key.scopes),  # type: ignore[arg-type]  # the store holds checked scopes
        allowed_models=list(key.allowed_models) if key.allowed_models is not None else None,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        limits=[wire.RateLimitSpec(kind=r.kind, limit=r.limit, window_s=r.window_s) for r in key.limits],  # type: ignore[arg-type]  # checked kinds
        max_parallel_requests=key.max_parallel_requests,
        budget_usd=key.budget_usd,
        budget_period=key.budget_period,  # type: ignore[arg-type]  # a checked period
        budget_soft_usd=key.budget_soft_usd,
        routing_profile=key.routing_profile,
        secret=secret,
    )


def project_object(project: Project) -> wire.ProjectObject:
    return wire.ProjectObject(id=project.id, name=project.name, created_at=project.created_at)


@router.post("/keys", response_model=wire.ApiKeyObject, responses=error_responses(*JSON_BODY_ERRORS))
def create_key(
    body: Annotated[wire.ApiKeyCreate, Depends(JsonBody(wire.ApiKeyCreate))], _: Caller, svc: Svc
) -> wire.ApiKeyObject:
    """A new key; its `secret` is in this answer only."""
    key, secret = svc.keys.create(
        body.project, body.name, body.scopes, body.allowed_models, body.expires_at,
        limits=[_limit(spec) for spec in body.limits], max_parallel_requests=body.max_parallel_requests,
        budget_usd=body.budget_usd, budget_period=body.budget_period, budget_soft_usd=body.budget_soft_usd,
        routing_profile=body.routing_profile,
    )  # fmt: skip
    return key_object(key, secret)


def _limit(spec: wire.RateLimitSpec) -> RateLimit:
    return RateLimit(spec.kind, spec.limit, spec.window_s)


@router.get("/keys", response_model=wire.ApiKeyList)
def list_keys(_: Caller, svc: Svc) -> wire.ApiKeyList:
    """Every key of every project, revoked ones too (never their secrets)."""
    return wire.ApiKeyList(data=[key_object(k) for k in svc.keys.list()])


@router.get("/keys/{key_id}", response_model=wire.ApiKeyObject, responses=error_responses(404))
def show_key(key_id: str, _: Caller, svc: Svc) -> wire.ApiKeyObject:
    return key_object(svc.keys.show(key_id))


@router.post("/keys/{key_id}", response_model=wire.ApiKeyObject, responses=error_responses(*JSON_BODY_ERRORS, 404))
def update_key(
    key_id: str, body: Annotated[wire.ApiKeyUpdate, Depends(JsonBody(wire.ApiKeyUpdate))], _: Caller, svc: Svc
) -> wire.ApiKeyObject:
    """Change the fields the body names (a revoked key cannot be changed: 404)."""
    changes = body.model_dump(exclude_unset=True)
    if "limits" in changes:
        changes["limits"] = [_limit(spec) for spec in body.limits or ()]
    if changes.get("budget_period", "") is None:
        del changes["budget_period"]
    return key_object(svc.keys.update(key_id, **changes))


@router.delete("/keys/{key_id}", response_model=wire.ApiKeyDeleted, responses=error_responses(404))
def revoke_key(key_id: str, _: Caller, svc: Svc) -> wire.ApiKeyDeleted:
    """Revoke the key: it stops working at once; its ledger rows stay."""
    svc.keys.revoke(key_id)
    return wire.ApiKeyDeleted(id=key_id)


@router.get("/projects", response_model=wire.ProjectList)
def list_projects(_: Caller, svc: Svc) -> wire.ProjectList:
    return wire.ProjectList(data=[project_object(p) for p in svc.keys.projects()])


@router.post("/projects", response_model=wire.ProjectObject, responses=error_responses(*JSON_BODY_ERRORS))
def create_project(
    body: Annotated[wire.ProjectCreate, Depends(JsonBody(wire.ProjectCreate))], _: Caller, svc: Svc
) -> wire.ProjectObject:
    """The project of this name, created if new."""
    return project_object(svc.keys.ensure_project(body.name))


def _project(svc: Services, project: str) -> Project:
    """The project of this id or name (404 if none)."""
    for p in svc.keys.projects():
        if project in (p.id, p.name):
            return p
    raise NotFoundError(f"No project {project!r}.", param="project")


def _logging(p: Project, settings: BodySettings) -> wire.ProjectLogging:
    return wire.ProjectLogging(
        project_id=p.id, name=p.name, store_bodies=settings.store_bodies, body_cap_bytes=settings.body_cap_bytes
    )


@router.get("/projects/{project}/logging", response_model=wire.ProjectLogging, responses=error_responses(404))
def show_project_logging(project: str, _: Caller, svc: Svc) -> wire.ProjectLogging:
    """Whether the project's request logs keep bodies (by project id or name)."""
    p = _project(svc, project)
    return _logging(p, svc.store.project_bodies(p.id))


@router.post(
    "/projects/{project}/logging", response_model=wire.ProjectLogging, responses=error_responses(*JSON_BODY_ERRORS, 404)
)
def set_project_logging(
    project: str,
    body: Annotated[wire.ProjectLoggingUpdate, Depends(JsonBody(wire.ProjectLoggingUpdate))],
    _: Caller,
    svc: Svc,
) -> wire.ProjectLogging:
    """Opt the project in to (or out of) stored bodies: its synchronous requests' request
    and response bodies, each cut at `body_cap_bytes`, kept with their log rows (GET
    /v1/logs/{id}); applies within 5 seconds. Bodies kept before stay."""
    p = _project(svc, project)
    settings = BodySettings(body.store_bodies, body.body_cap_bytes)
    if not svc.store.set_project_bodies(p.id, settings):
        raise NotFoundError(f"No project {project!r}.", param="project")
    return _logging(p, settings)
