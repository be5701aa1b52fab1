"""/v1/admin/scheduling (extension): each upstream's adaptive concurrency now, and the
projects' share weights; POST /v1/admin/projects/{project}/weight sets a weight. Admin
scope (`api.deps.required_scope`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends

from batchgate.api.bodies import JsonBody
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import JSON_BODY_ERRORS, error_responses
from batchgate.app import Services
from batchgate.core.errors import NotFoundError
from batchgate.core.scheduling import upstream_concurrency
from batchgate.protocol import scheduling as wire

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=error_responses(401, 403, 500))

Caller = Annotated[str, Depends(project_id)]  # authenticates and checks the admin scope
Svc = Annotated[Services, Depends(services)]


def _scheduling(svc: Services) -> wire.SchedulingObject:
    weights = svc.store.project_weights()
    return wire.SchedulingObject(
        upstreams=[wire.UpstreamConcurrencyObject(**asdict(u)) for u in upstream_concurrency(svc.backend)],
        projects=[
            wire.ProjectWeight(project_id=p.id, name=p.name, weight=weights.get(p.id, 1.0))
            for p in svc.store.list_projects()
        ],
    )


@router.get("/scheduling", response_model=wire.SchedulingObject)
def show_scheduling(_: Caller, svc: Svc) -> wire.SchedulingObject:
    """Each upstream's concurrency limit now (it adapts: AIMD on 429, 503 and timeouts,
    within max_concurrency), what waits for it, and every project's weight."""
    return _scheduling(svc)


@router.post(
    "/projects/{project}/weight",
    response_model=wire.SchedulingObject,
    responses=error_responses(*JSON_BODY_ERRORS, 404),
)
def set_project_weight(
    project: str,
    body: Annotated[wire.ProjectWeightUpdate, Depends(JsonBody(wire.ProjectWeightUpdate))],
    _: Caller,
    svc: Svc,
) -> wire.SchedulingObject:
    """Set a project's weight (by id or name): its batches get capacity in proportion to it."""
    match = [p.id for p in svc.store.list_projects() if project in (p.id, p.name)]
    if not match or not svc.store.set_project_weight(match[0], body.weight):
        raise NotFoundError(f"No project {project!r}.", param="project")
    return _scheduling(svc)
