"""GET /v1/logs (the ledger's rows, newest first) and GET /v1/usage (their sums, as JSON
or CSV). A key reads its own project's; an `admin` key every project's."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from batchgate.api.deps import services, visible_project
from batchgate.api.openapi import error_responses
from batchgate.app import Services
from batchgate.core.errors import InvalidRequestError, NotFoundError
from batchgate.core.ledger import LedgerEntry, LedgerQuery
from batchgate.core.usage import Bucket, parse_group_by, usage
from batchgate.protocol import usage as wire

router = APIRouter(prefix="/v1", tags=["usage"], responses=error_responses(401, 403, 500))

Visible = Annotated[str | None, Depends(visible_project)]
Svc = Annotated[Services, Depends(services)]
MAX_INT = 2**63 - 1
LOG_PREFIX = "log_"


def _query(
    visible: str | None,
    project_id: str | None,
    key_id: str | None,
    batch_id: str | None,
    model: str | None,
    backend: str | None,
    endpoint: str | None,
    status: int | None,
    since: float | None,
    until: float | None,
) -> LedgerQuery:
    """The filters; a key that is not admin reads its own project whatever it asks for."""
    project = visible if visible is not None else project_id
    return LedgerQuery(project, key_id, batch_id, model, backend, endpoint, status, since, until)


def _log(e: LedgerEntry) -> wire.LogEntry:
    return wire.LogEntry(**{**asdict(e), "id": f"{LOG_PREFIX}{e.id}"})


@router.get("/logs", response_model=wire.LogList, responses=error_responses(400))
def list_logs(
    visible: Visible,
    svc: Svc,
    project_id: str | None = None,
    key_id: str | None = None,
    batch_id: str | None = None,
    model: Annotated[str | None, Query(description="Asked for or resolved.")] = None,
    backend: str | None = None,
    endpoint: str | None = None,
    status: Annotated[int | None, Query(ge=0, le=999)] = None,
    since: Annotated[float | None, Query(description="Started at or after (epoch seconds).")] = None,
    until: Annotated[float | None, Query(description="Started before (epoch seconds).")] = None,
    before: Annotated[str | None, Query(description="The `last_id` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> wire.LogList:
    """One row per request, synchronous or batch line, newest first (bodies: GET /v1/logs/{id})."""
    query = _query(visible, project_id, key_id, batch_id, model, backend, endpoint, status, since, until)
    if before is not None:
        cursor = before.removeprefix(LOG_PREFIX)
        if not cursor.isdigit() or int(cursor) > MAX_INT:
            raise InvalidRequestError(f"Invalid cursor {before!r}.", param="before", code="invalid_value")
        query.before = int(cursor)
    query.limit = limit
    page = svc.store.list_ledger(query)
    data = [_log(e) for e in page.data]
    return wire.LogList(data=data, has_more=page.has_more, last_id=data[-1].id if data else None)


@router.get("/logs/{log_id}", response_model=wire.LogDetail, responses=error_responses(404))
def show_log(log_id: str, visible: Visible, svc: Svc) -> wire.LogDetail:
    """One row, with its request and response bodies when its project keeps them (opt-in,
    POST /v1/admin/projects/{project}/logging; synchronous requests only: a batch line's
    bodies are in the batch's input and output files)."""
    number = log_id.removeprefix(LOG_PREFIX)
    if not number.isdigit() or int(number) > MAX_INT:
        raise NotFoundError(f"No log {log_id!r}.", param="log_id")
    page = svc.store.list_ledger(LedgerQuery(visible, before=int(number) + 1, limit=1))
    if not page.data or page.data[0].id != int(number):
        raise NotFoundError(f"No log {log_id!r}.", param="log_id")
    entry = page.data[0]
    detail = wire.LogDetail(**_log(entry).model_dump())
    bodies = svc.store.get_request_bodies(entry.id)
    if bodies is not None:
        detail.request_body, detail.response_body = bodies.request, bodies.response
        detail.request_body_truncated, detail.response_body_truncated = (
            bodies.request_truncated, bodies.response_truncated
        )  # fmt: skip
    return detail


def _bucket(b: Bucket) -> wire.UsageBucket:
    return wire.UsageBucket(
        start_time=b.start,
        end_time=b.end,
        group=b.group,
        sync=wire.UsageTotals(**asdict(b.sync)),
        batch=wire.UsageTotals(**asdict(b.batch)),
    )


CSV = {"text/csv": {"schema": {"type": "string", "description": "With format=csv: a row per bucket and group."}}}


@router.get("/usage", response_model=wire.UsageReport, responses={**error_responses(400), 200: {"content": CSV}})
def get_usage(
    visible: Visible,
    svc: Svc,
    group_by: Annotated[
        str | None, Query(description="Comma-separated: key, project, model, backend, endpoint, batch.")
    ] = None,
    bucket: Literal["hour", "day", "month"] = "day",
    project_id: str | None = None,
    key_id: str | None = None,
    batch_id: str | None = None,
    model: str | None = None,
    backend: str | None = None,
    endpoint: str | None = None,
    since: Annotated[float | None, Query(description="Started at or after (epoch seconds).")] = None,
    until: Annotated[float | None, Query(description="Started before (epoch seconds).")] = None,
    format: Literal["json", "csv"] = "json",
) -> wire.UsageReport | Response:
    """Requests, tokens and cost per time bucket (UTC) and group, synchronous and batch apart."""
    groups = parse_group_by(group_by)
    query = _query(visible, project_id, key_id, batch_id, model, backend, endpoint, None, since, until)
    buckets = [_bucket(b) for b in usage(svc.store, query, groups, bucket)]
    if format == "csv":
        return Response(_csv(buckets, groups), media_type="text/csv")
    return wire.UsageReport(bucket=bucket, group_by=list(groups), data=buckets)


def _csv(buckets: list[wire.UsageBucket], groups: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    totals = ("requests", "input_tokens", "output_tokens", "cost")
    writer.writerow(["start_time", "end_time", *groups, *(f"{k}_{t}" for k in ("sync", "batch") for t in totals)])
    for b in buckets:
        sums = [getattr(getattr(b, kind), t) for kind in ("sync", "batch") for t in totals]
        writer.writerow([b.start_time, b.end_time, *(b.group[g] or "" for g in groups), *sums])
    return out.getvalue()
