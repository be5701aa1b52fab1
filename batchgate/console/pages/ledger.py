"""Request logs (the ledger, newest first, cursor-paged, with the filters of /v1/logs) and
Usage (tokens and cost per day stacked by model or key, totals, sync vs batch, CSV)."""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from batchgate.console.pages.common import PAGE_SIZE, int_or_none
from batchgate.console.render import Context, Ctx
from batchgate.core.errors import InvalidRequestError
from batchgate.core.ledger import LedgerQuery
from batchgate.core.usage import Bucket, usage

router = APIRouter(include_in_schema=False)  # pages, not API operations

LOG_FILTERS = ("project_id", "key_id", "batch_id", "model", "backend", "endpoint", "status", "since", "until")
DAY = 86_400
STACKS = {"model": "model", "key": "key"}
RANGES = (7, 30, 90)


def _day(text: str, param: str) -> int | None:
    """A YYYY-MM-DD date as the epoch second its UTC day starts."""
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"{param} must be a date (YYYY-MM-DD).", param=param) from None
    return calendar.timegm(day.timetuple())


def _ledger_query(ctx: Ctx, f: dict[str, str]) -> LedgerQuery:
    """The filters; a key that is not admin reads its own project whatever it asks for (as /v1/logs)."""
    status = f.get("status", "")
    if status and not status.isdigit():
        raise InvalidRequestError("status must be an HTTP status code.", param="status")
    until = _day(f.get("until", ""), "until")
    return LedgerQuery(
        project_id=ctx.viewer.visible_project or f.get("project_id") or None,
        key_id=f.get("key_id") or None,
        batch_id=f.get("batch_id") or None,
        model=f.get("model") or None,
        backend=f.get("backend") or None,
        endpoint=f.get("endpoint") or None,
        status_code=int(status) if status else None,
        since=_day(f.get("since", ""), "since"),
        until=until + DAY if until is not None else None,  # the whole "until" day
    )


@router.get("/logs")
def logs(ctx: Context, request: Request) -> Response:
    ctx.require("read")
    filters = {name: request.query_params.get(name, "").strip() for name in LOG_FILTERS}
    query = _ledger_query(ctx, filters)
    query.before = int_or_none(request.query_params.get("before"))
    query.limit = PAGE_SIZE
    page = ctx.services.store.list_ledger(query)
    return ctx.page(
        "logs.html",
        entries=page.data,
        has_more=page.has_more,
        filters=filters,
        next_before=page.data[-1].id if page.data else None,
        paged=query.before is not None,
    )


def _usage_window(request: Request) -> tuple[dict[str, str], int]:
    q = request.query_params
    days = int_or_none(q.get("days")) or 7
    if days not in RANGES:
        raise InvalidRequestError(f"days must be one of {', '.join(map(str, RANGES))}.", param="days")
    stack = q.get("stack", "model")
    if stack not in STACKS:
        raise InvalidRequestError("stack must be model or key.", param="stack")
    filters = {"days": str(days), "stack": stack, "model": q.get("model", ""), "key_id": q.get("key_id", "")}
    return filters, days


def _buckets(ctx: Ctx, filters: dict[str, str], days: int) -> tuple[list[Bucket], int, int]:
    today = calendar.timegm(dt.datetime.now(dt.UTC).date().timetuple())
    since, until = today - (days - 1) * DAY, today + DAY
    query = _ledger_query(ctx, {"model": filters["model"], "key_id": filters["key_id"]})
    query.since, query.until = since, until
    # one pass over the ledger: every total on the page is summed from these rows
    return usage(ctx.services.store, query, ("key", "model", "backend"), "day"), since, until


@router.get("/usage")
def usage_page(ctx: Context, request: Request) -> Response:
    ctx.require("read")
    filters, days = _usage_window(request)
    buckets, since, _ = _buckets(ctx, filters, days)
    keys = {k.id: k.name or k.prefix for k in ctx.services.keys.list()}
    stack = filters["stack"]
    day_starts = [since + i * DAY for i in range(days)]
    tokens: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    cost: dict[str, list[float]] = defaultdict(lambda: [0.0] * days)
    totals: dict[str, dict[str, dict[str, float]]] = {"key": {}, "model": {}, "backend": {}}
    kinds = {"sync": _zero(), "batch": _zero()}
    for b in buckets:
        i = (b.start - since) // DAY
        name = _name(b.group[stack], keys) if stack == "key" else (b.group["model"] or "(none)")
        for kind, t in (("sync", b.sync), ("batch", b.batch)):
            tokens[name][i] += t.input_tokens + t.output_tokens
            cost[name][i] += t.cost
            for group in totals:
                label = _name(b.group[group], keys) if group == "key" else (b.group[group] or "(none)")
                _add(totals[group].setdefault(label, _zero()), t)
            _add(kinds[kind], t)
    names = sorted(tokens, key=lambda n: -sum(tokens[n]))
    chart = {
        "days": day_starts,
        "names": names,
        "tokens": [tokens[n] for n in names],
        "cost": [[round(c, 8) for c in cost[n]] for n in names],
    }
    return ctx.page(
        "usage.html",
        filters=filters,
        ranges=RANGES,
        chart=chart,
        totals={group: sorted(rows.items(), key=lambda kv: -kv[1]["cost"]) for group, rows in totals.items()},
        kinds=kinds,
        grand=_sum(kinds.values()),
        rows=[(day, [tokens[n][i] for n in names], sum(cost[n][i] for n in names)) for i, day in enumerate(day_starts)],
    )


@router.get("/usage.csv")
def usage_csv(ctx: Context, request: Request) -> Response:
    """Per day, key, model and backend: requests, tokens and cost, sync and batch apart."""
    ctx.require("read")
    filters, days = _usage_window(request)
    buckets, _, _ = _buckets(ctx, filters, days)
    out = io.StringIO()
    writer = csv.writer(out)
    totals = ("requests", "input_tokens", "output_tokens", "cost")
    writer.writerow(["day", "key", "model", "backend", *(f"{k}_{t}" for k in ("sync", "batch") for t in totals)])
    for b in buckets:
        day = dt.datetime.fromtimestamp(b.start, dt.UTC).date().isoformat()
        sums = [getattr(getattr(b, kind), t) for kind in ("sync", "batch") for t in totals]
        writer.writerow([day, b.group["key"] or "", b.group["model"] or "", b.group["backend"] or "", *sums])
    headers = {"content-disposition": f'attachment; filename="usage-{days}d.csv"'}
    return Response(out.getvalue(), media_type="text/csv", headers=headers)


def _name(key_id: str | None, names: dict[str, str]) -> str:
    return f"{names.get(key_id, key_id)}" if key_id else "(no key)"


def _zero() -> dict[str, float]:
    return {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}


def _add(into: dict[str, float], t: Any) -> None:
    into["requests"] += t.requests
    into["input_tokens"] += t.input_tokens
    into["output_tokens"] += t.output_tokens
    into["cost"] += t.cost


def _sum(parts: Any) -> dict[str, float]:
    total = _zero()
    for part in parts:
        for name in total:
            total[name] += part[name]
    return total
