"""Budgets on the API: synchronous model requests of a key that spent its budget are
refused (429 `insufficient_quota`), and GET /v1/budget shows a key's budget and spend."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from batchgate.api.deps import project_id, services
from batchgate.api.errors import to_response
from batchgate.api.metering import METERED_PATHS
from batchgate.api.openapi import error_responses
from batchgate.app import Services
from batchgate.core.budgets import BudgetStatus
from batchgate.core.errors import NotFoundError, QuotaExceededError
from batchgate.core.telemetry import record_rejection
from batchgate.protocol import budgets as wire

router = APIRouter(prefix="/v1", tags=["usage"], responses=error_responses(401, 403, 500))


class BudgetGate:
    """Pure ASGI middleware: a synchronous model request of a key that spent its budget
    gets 429 `insufficient_quota` before it reaches a backend. Inside `Metering`, so the
    refusal is a ledger row (cost 0) like any answer."""

    def __init__(self, app: Any, services: Any):
        self.app = app
        self.services = services

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        key = scope.get("state", {}).get("api_key") if scope["type"] == "http" else None
        if (
            key is not None
            and key.budget_usd is not None
            and scope["method"] == "POST"
            and scope["path"] in METERED_PATHS
        ):
            try:
                await run_in_threadpool(self.services.budgets.check, key)
            except QuotaExceededError as exc:
                record_rejection("budget")
                await to_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def budget_object(s: BudgetStatus) -> wire.BudgetStatus:
    return wire.BudgetStatus(
        key_id=s.key_id,
        period=s.period,  # type: ignore[arg-type]
        budget_usd=s.budget_usd,
        soft_budget_usd=s.soft_usd,
        spent_usd=round(s.spent_usd, 8),
        remaining_usd=None if s.remaining_usd is None else round(s.remaining_usd, 8),
        soft_reached=s.soft_reached,
        exhausted=s.exhausted,
        period_start=None if s.period_start is None else int(s.period_start),
        period_end=None if s.period_end is None else int(s.period_end),
    )


@router.get("/budget", response_model=wire.BudgetStatus, responses=error_responses(404))
def show_budget(
    request: Request,
    project: Annotated[str, Depends(project_id)],
    svc: Annotated[Services, Depends(services)],
    key_id: str | None = None,
) -> wire.BudgetStatus:
    """The caller key's budget and spend this period; an `admin` key may ask for any key
    (`key_id`), another key for the keys of its project."""
    caller = getattr(request.state, "api_key", None)
    wanted = key_id or (caller.id if caller is not None else None)
    key = svc.store.get_api_key(wanted) if wanted else None
    admin = caller is None or "admin" in caller.scopes
    if key is None or (not admin and key.project_id != project):
        raise NotFoundError(f"No API key with id {wanted!r}.", param="key_id")
    return budget_object(svc.budgets.status(key))
