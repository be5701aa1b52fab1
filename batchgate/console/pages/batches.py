"""Batches: the list (filters, active first, live progress), a batch's detail (timeline,
counts, usage, request rows, output preview), cancel, and result downloads."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.responses import Response

from batchgate.console.pages.common import PAGE_SIZE, acting_as, int_or_none, visible_batch
from batchgate.console.render import Context, Ctx
from batchgate.core.browse import BATCH_KINDS, BatchSearch, is_active
from batchgate.core.errors import InvalidRequestError, NotFoundError
from batchgate.core.models import BatchRecord, BatchStatus, RequestState
from batchgate.core.states import PAUSABLE_STATUSES, RETRYABLE_STATUSES

router = APIRouter(include_in_schema=False)  # pages, not API operations

PREVIEW_LINES = 5
PREVIEW_LINE_BYTES = 2000
TIMELINE = (
    ("created", "created_at"),
    ("in progress", "in_progress_at"),
    ("finalizing", "finalizing_at"),
    ("cancelling", "cancelling_at"),
    ("completed", "completed_at"),
    ("failed", "failed_at"),
    ("expired", "expired_at"),
    ("cancelled", "cancelled_at"),
)


def progress(batch: BatchRecord) -> dict[str, Any]:
    """What a progress bar shows: lines done (succeeded or failed) out of the total."""
    done = batch.completed + batch.failed
    percent = 100 if batch.status == BatchStatus.COMPLETED else (done * 100 // batch.total if batch.total else 0)
    return {
        "done": done,
        "total": batch.total,
        "percent": percent,
        "active": is_active(batch.status),
        "paused": batch.paused,
        "pausable": batch.status in PAUSABLE_STATUSES,
        "retryable": batch.status in RETRYABLE_STATUSES and batch.source == "openai" and batch.failed > 0,
    }


def duration(batch: BatchRecord) -> float | None:
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    return (ended - batch.created_at) if ended else None


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {name: q.get(name, "").strip() for name in ("status", "kind", "key", "model", "offset")}


def _search(ctx: Ctx, filters: dict[str, str]) -> tuple[list[BatchRecord], bool, int]:
    status = filters["status"]
    if status and status not in BatchStatus.__members__.values():
        raise InvalidRequestError(f"Unknown status {status!r}.", param="status")
    if filters["kind"] and filters["kind"] not in BATCH_KINDS:
        raise InvalidRequestError(f"Unknown kind {filters['kind']!r}.", param="kind")
    offset = int_or_none(filters["offset"]) or 0
    query = BatchSearch(
        project_id=ctx.viewer.visible_project,
        status=BatchStatus(status) if status else None,
        source=filters["kind"] or None,
        key_id=filters["key"] or None,
        model=filters["model"] or None,
        offset=offset,
        limit=PAGE_SIZE,
    )
    page = ctx.services.store.search_batches(query)
    return page.data, page.has_more, offset


def _table(ctx: Ctx, request: Request, template: str) -> Response:
    ctx.require("read")
    filters = _filters(request)
    batches, has_more, offset = _search(ctx, filters)
    keys = [k for k in ctx.services.keys.list() if ctx.viewer.admin or k.project_id == ctx.viewer.project_id]
    return ctx.page(
        template,
        batches=batches,
        progress=progress,
        duration=duration,
        filters=filters,
        has_more=has_more,
        offset=offset,
        page_size=PAGE_SIZE,
        live=any(is_active(b.status) for b in batches),
        statuses=[s.value for s in BatchStatus],
        kinds=BATCH_KINDS,
        keys=keys,
        key_names={k.id: k.name or k.prefix for k in keys},
    )


@router.get("/batches")
def batch_list(ctx: Context, request: Request) -> Response:
    return _table(ctx, request, "batches.html")


@router.get("/batches/table")
def batch_table(ctx: Context, request: Request) -> Response:
    """The table alone: what the list page polls while a batch on it is active."""
    return _table(ctx, request, "_batch_table.html")


@router.get("/batches/{batch_id}")
def batch_detail(batch_id: str, ctx: Context, request: Request) -> Response:
    ctx.require("read")
    batch = visible_batch(ctx, batch_id)
    state = request.query_params.get("state", "")
    if state and state not in RequestState.__members__.values():
        raise InvalidRequestError(f"Unknown request state {state!r}.", param="state")
    after = int_or_none(request.query_params.get("after"))
    try:
        rows = ctx.services.store.list_request_rows(batch.id, RequestState(state) if state else None, after, PAGE_SIZE)
    except KeyError:
        raise NotFoundError(f"No such Batch object: {batch_id}", param="batch_id") from None
    return ctx.page(
        "batch.html",
        batch=batch,
        progress=progress(batch),
        duration=duration(batch),
        timeline=[(label, getattr(batch, field)) for label, field in TIMELINE if getattr(batch, field)],
        rows=rows.data,
        has_more=rows.has_more,
        state=state,
        after=after,
        states=[s.value for s in RequestState],
        preview=_preview(ctx, batch, rows.data),
        models=sorted({r.model for r in rows.data if r.model}),
    )


@router.get("/batches/{batch_id}/progress")
def batch_progress(batch_id: str, ctx: Context) -> Response:
    """The detail page's live part: status, bar, counts, usage and downloads."""
    ctx.require("read")
    batch = visible_batch(ctx, batch_id)
    return ctx.page("_batch_progress.html", batch=batch, progress=progress(batch), duration=duration(batch))


@router.post("/batches/{batch_id}/cancel")
def cancel(batch_id: str, ctx: Context, request: Request) -> Response:
    ctx.require("batch")
    batch = visible_batch(ctx, batch_id)
    with acting_as(ctx):
        ctx.services.batches.cancel(batch.project_id, batch.id)
    back = request.query_params.get("back") or f"/console/batches/{batch.id}"
    return RedirectResponse(back if back.startswith("/console/") else "/console/batches", status_code=303)


@router.post("/batches/{batch_id}/{action}")
def lifecycle(batch_id: str, action: str, ctx: Context) -> Response:
    """Pause, resume, or retry the failed lines (as a new batch) through core's BatchLifecycle."""
    ctx.require("batch")
    batch = visible_batch(ctx, batch_id)
    moves = {"pause": ctx.services.lifecycle.pause, "resume": ctx.services.lifecycle.resume}
    if action == "retry":
        with acting_as(ctx):
            retry = ctx.services.lifecycle.retry(batch.project_id, batch.id)
        return RedirectResponse(f"/console/batches/{retry.id}", status_code=303)
    if action not in moves:
        raise NotFoundError(f"No batch action {action!r}.", param="action")
    moves[action](batch.project_id, batch.id)
    return RedirectResponse(f"/console/batches/{batch.id}", status_code=303)


@router.get("/batches/{batch_id}/{which}.jsonl")
def download(batch_id: str, which: str, ctx: Context) -> Response:
    """The batch's output or error file, as a download."""
    ctx.require("read")
    batch = visible_batch(ctx, batch_id)
    file_id = {"output": batch.output_file_id, "errors": batch.error_file_id}.get(which)
    if file_id is None:
        raise NotFoundError(f"Batch {batch.id} has no {which} file (yet).", param=which)
    _, stream = ctx.services.files.open(batch.project_id, file_id)
    headers = {"content-disposition": f'attachment; filename="{batch.id}_{which}.jsonl"'}
    return StreamingResponse(_chunks(stream), media_type="application/jsonl", headers=headers)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(256 * 1024):
            yield chunk


def _preview(ctx: Ctx, batch: BatchRecord, rows: list[Any]) -> list[str]:
    """The first lines of the output file; before there is one, the first answers so far."""
    if batch.output_file_id:
        try:
            _, stream = ctx.services.files.open(batch.project_id, batch.output_file_id)
        except NotFoundError:
            return []
        with stream:
            lines = itertools.islice(iter(lambda: stream.readline(PREVIEW_LINE_BYTES * 4), b""), PREVIEW_LINES)
            return [_cut(line) for line in lines]
    return [_cut(r.body) for r in rows if r.body and r.state == RequestState.SUCCEEDED][:PREVIEW_LINES]


def _cut(data: bytes) -> str:
    text = data.decode("utf-8", "replace").rstrip("\n")
    return text if len(text) <= PREVIEW_LINE_BYTES else text[:PREVIEW_LINE_BYTES] + " …"
