"""Keys (admin keys only): create, revoke, each key's usage against its limits and budget.
Models: the routing config's routes and upstreams (with their health), and the local
catalog (installed, ready)."""

from __future__ import annotations

import calendar
import datetime as dt
import os
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from batchgate.console.render import Context
from batchgate.core.budgets import BudgetStatus, has_budget
from batchgate.core.errors import InvalidRequestError
from batchgate.core.ledger import LedgerQuery
from batchgate.core.models import SCOPES, ApiKey
from batchgate.core.ratelimit import Limiter, LimitState, is_limited
from batchgate.core.routing import UpstreamConfig, load_config
from batchgate.core.usage import usage

router = APIRouter(include_in_schema=False)  # pages, not API operations

DAY = 86_400


def _month_start(now: dt.datetime) -> int:
    return calendar.timegm((now.year, now.month, 1, 0, 0, 0))


def _key_usage(ctx: Any) -> dict[str | None, dict[str, dict[str, float]]]:
    """Each key's requests, tokens and cost today and this month (UTC), from the ledger."""
    now = dt.datetime.now(dt.UTC)
    today = calendar.timegm(now.date().timetuple())
    query = LedgerQuery(since=_month_start(now))
    spent: dict[str | None, dict[str, dict[str, float]]] = {}
    for b in usage(ctx.services.store, query, ("key",), "day"):
        sums = spent.setdefault(b.group["key"], {"today": _zero(), "month": _zero()})
        for t in (b.sync, b.batch):
            for period in ("month", "today") if b.start >= today else ("month",):
                sums[period]["requests"] += t.requests
                sums[period]["tokens"] += t.input_tokens + t.output_tokens
                sums[period]["cost"] += t.cost
    return spent


def _key_standing(ctx: Any, keys: list[ApiKey]) -> dict[str, tuple[BudgetStatus | None, list[LimitState]]]:
    """Each live key's budget in its current period (any period) and its limits as they
    stand now, from the same services the API enforces them with."""
    now = ctx.services.clock.time()
    limiter = Limiter(ctx.services.store)
    standing: dict[str, tuple[BudgetStatus | None, list[LimitState]]] = {}
    for k in keys:
        if k.revoked_at is None and (has_budget(k) or is_limited(k)):
            budget = ctx.services.budgets.status(k, now) if has_budget(k) else None
            standing[k.id] = (budget, limiter.states(k, now) if k.limits else [])
    return standing


def _keys_page(ctx: Context, created: tuple[ApiKey, str] | None) -> Response:
    keys = ctx.services.keys.list()
    return ctx.page(
        "keys.html",
        keys=keys,
        projects=ctx.services.keys.projects(),
        scopes=SCOPES,
        spent=_key_usage(ctx),
        standing=_key_standing(ctx, keys),
        created=created,
    )


def _zero() -> dict[str, float]:
    return {"requests": 0, "tokens": 0, "cost": 0.0}


@router.get("/keys")
def keys(ctx: Context, request: Request) -> Response:
    ctx.require_admin()
    return _keys_page(ctx, None)


def _models(text: str) -> list[str] | None:
    names = [m.strip() for m in text.replace("\n", ",").split(",") if m.strip()]
    return names or None


def _expiry(text: str) -> int | None:
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError("expires must be a date (YYYY-MM-DD).", param="expires_at") from None
    return calendar.timegm(day.timetuple())


@router.post("/keys")
async def create_key(ctx: Context, request: Request) -> Response:
    ctx.require_admin()
    form = await request.form()
    text = {name: str(value).strip() for name, value in form.items() if isinstance(value, str)}
    scopes = [str(s) for s in form.getlist("scopes")]
    project = text.get("project") or (ctx.viewer.key.project_name if ctx.viewer.key else "default")
    key, secret = ctx.services.keys.create(
        project,
        text.get("name", ""),
        scopes,
        _models(text.get("allowed_models", "")),
        _expiry(text.get("expires", "")),
    )
    if changes := _limits(text):
        key = ctx.services.keys.update(key.id, **changes)
    return _keys_page(ctx, (key, secret))


# the form's limit fields: (kind, window in seconds) of each
LIMIT_FIELDS = {
    "requests_per_minute": ("requests", 60),
    "total_tokens_per_minute": ("total_tokens", 60),
    "total_tokens_per_day": ("total_tokens", DAY),
}


def _number(text: dict[str, str], name: str, kind: type[int] | type[float]) -> int | float | None:
    value = text.get(name, "")
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a number.", param=name) from None


def _limits(text: dict[str, str]) -> dict[str, Any]:
    """The limits and budget the form sets, as `KeyService.update` takes them (none: {})."""
    changes: dict[str, Any] = {}
    limits = [
        {"kind": kind, "limit": limit, "window_s": window}
        for name, (kind, window) in LIMIT_FIELDS.items()
        if (limit := _number(text, name, int)) is not None
    ]
    if limits:
        changes["limits"] = limits
    if (parallel := _number(text, "max_parallel_requests", int)) is not None:
        changes["max_parallel_requests"] = parallel
    if (budget := _number(text, "budget_usd", float)) is not None:
        changes["budget_usd"] = budget
        changes["budget_period"] = text.get("budget_period") or "month"
    if (soft := _number(text, "budget_soft_usd", float)) is not None:
        changes["budget_soft_usd"] = soft
    return changes


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: str, ctx: Context) -> Response:
    ctx.require_admin()
    ctx.services.keys.revoke(key_id)
    return RedirectResponse("/console/keys", status_code=303)


@router.get("/models")
def models(ctx: Context) -> Response:
    ctx.require("read")
    settings = ctx.services.settings
    routing = load_config(settings.config)
    catalog = []
    if settings.backend == "local":
        from batchgate.engines.local.catalog import ModelCatalog

        catalog = ModelCatalog(settings.models_dir).status()
    served = set(ctx.services.backend.models())
    return ctx.page(
        "models.html",
        routing=routing,
        routes=sorted({route.name: route for route in routing.routes.values()}.items()),
        upstreams=sorted(routing.upstreams.items()),
        catalog=catalog,
        served=sorted(served),
        backend=settings.backend,
        default_model=settings.default_model,
    )


HEALTH_TIMEOUT = 2.0


def upstream_health(upstream: UpstreamConfig) -> str:
    """ "ok" if the upstream answers GET /models, else why not (a short timeout: a page waits)."""
    key = os.environ.get(upstream.api_key_env) if upstream.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(upstream.base_url.rstrip("/") + "/models", headers=headers, timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok" if response.status_code == 200 else f"HTTP {response.status_code}"


@router.get("/models/health")
def models_health(ctx: Context) -> Response:
    """Each upstream's health (an htmx fragment the Models page loads after it shows)."""
    ctx.require("read")
    routing = load_config(ctx.services.settings.config)
    return ctx.page(
        "_upstream_health.html", health=[(n, upstream_health(u)) for n, u in sorted(routing.upstreams.items())]
    )
