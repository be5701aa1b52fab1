"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from batchgate.protocol.health import Health, Readiness
from batchgate.store.disk import storage_problem

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness: the process answers HTTP."""
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: `checks` says which check failed."}},
)
def ready(request: Request) -> JSONResponse:
    """Readiness: the store answers, the data dir can take writes (not while its disk is
    full), and the in-process worker (if any) is looping."""
    services = request.app.state.services
    checks: dict[str, str] = {}
    try:
        services.store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {exc}"
    checks["storage"] = storage_problem(services.settings.home) or "ok"
    worker = request.app.state.worker_thread
    if worker is not None:
        checks["worker"] = "ok" if worker.alive() else "not running"
    ok = all(v == "ok" for v in checks.values())
    readiness = Readiness(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(readiness.model_dump(), status_code=200 if ok else 503)
