"""/api: operations over records, synchronously (/api/completions/{operation}) and as
batches (/api/batches, /api/files), with output as paged JSON, JSONL or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from batchgate.api.deps import json_object, project_id, services
from batchgate.api.uploads import receive_upload
from batchgate.app import Services
from batchgate.core.errors import BatchgateError, InvalidRequestError
from batchgate.core.models import BatchRecord
from batchgate.core.operation_runs import parse_items
from batchgate.core.operations import Item, Operation
from batchgate.core.operations import result_fields as result_fields_of
from batchgate.core.records import detect_format, iter_records

router = APIRouter(prefix="/api", tags=["operations"])

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]

# keys of a batch request that are not operation parameters
BATCH_KEYS = ("operation", "items", "file_id", "completion_window", "metadata", "content_column", "format")
MAX_RECORD_FILE_BYTES = 100 * 1024 * 1024


@router.post("/completions/{operation}")
async def complete(operation: str, request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    body = await json_object(request)
    items = parse_items(body.pop("items", None))
    op = svc.operations.operation(operation, body)
    rows = await svc.operations.run(op, items)
    return {"operation": op.kind, "model": op.model, "data": rows}


@router.post("/batches")
async def create_batch(request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    body = await json_object(request)
    op = _operation(svc, body)
    if body.get("file_id") is not None:
        batch = await run_in_threadpool(_from_file, svc, project, op, str(body["file_id"]), body)
    else:
        items = parse_items(body.get("items"))
        batch = await run_in_threadpool(_submit, svc, project, op, iter(items), body)
    return _created(batch)


@router.post("/files")
async def upload_records(request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    """A CSV / JSON / JSONL / text file of records, with the operation's parameters as form
    fields, straight into an operation batch."""
    limit = min(svc.files.max_file_bytes, MAX_RECORD_FILE_BYTES)
    with svc.files.upload(project) as upload:
        fields = await receive_upload(request, upload, limit)
        source = await run_in_threadpool(upload.commit, "batch", fields.get("filename"))
    params = {key: _form_value(value) for key, value in fields.items() if key not in ("filename", "purpose")}
    try:
        batch = await run_in_threadpool(_from_file, svc, project, _operation(svc, params), source.id, params)
    except BatchgateError:
        svc.files.delete(project, source.id)  # nothing was made of it: do not keep it
        raise
    return {**_created(batch), "file_id": source.id}


@router.get("/batches")
def list_batches(project: Project, svc: Svc, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    """The project's operation batches, newest first (`after`: the last id of the previous page)."""
    page = svc.batches.list(project, after, limit)
    data = [_status(b) for b in page.data if b.source == "operation"]
    last = page.data[-1].id if page.data else None
    return {"object": "list", "data": data, "has_more": page.has_more, "last_id": last}


@router.get("/batches/{batch_id}")
def retrieve_batch(batch_id: str, project: Project, svc: Svc) -> dict[str, Any]:
    return _status(svc.operations.get(project, batch_id))


@router.post("/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, project: Project, svc: Svc) -> dict[str, Any]:
    svc.operations.get(project, batch_id)
    return _status(svc.batches.cancel(project, batch_id))


@router.get("/batches/{batch_id}/output", response_model=None)
def batch_output(
    batch_id: str,
    project: Project,
    svc: Svc,
    format: str = "json",
    offset: int = 0,
    limit: int | None = None,
) -> StreamingResponse:
    if format not in ("json", "jsonl", "csv"):
        raise InvalidRequestError("'format' must be json, jsonl or csv.", param="format")
    if offset < 0 or (limit is not None and limit < 1):
        raise InvalidRequestError("'offset' must be 0 or more and 'limit' 1 or more.", param="limit")
    batch = svc.operations.get(project, batch_id)
    assert batch.operation is not None
    rows = _page(svc.operations.rows(project, batch_id), offset, limit)
    if format == "json":
        head = {"offset": offset, "limit": limit, "total": batch.operation["items"]}
        return StreamingResponse(iterate_in_threadpool(_json_page(head, rows)), media_type="application/json")
    if format == "jsonl":
        lines = (orjson.dumps(row) + b"\n" for row in rows)
        return StreamingResponse(iterate_in_threadpool(lines), media_type="application/jsonl")
    op = Operation.from_json(batch.operation["operation"])
    headers = {"Content-Disposition": f'attachment; filename="{batch_id}.csv"'}
    return StreamingResponse(iterate_in_threadpool(_csv(op, rows)), media_type="text/csv", headers=headers)


# ---- helpers ----------------------------------------------------------------------


def _operation(svc: Services, body: dict[str, Any]) -> Operation:
    """The operation a batch request names, from its parameters (not its batch fields)."""
    kind = body.get("operation")
    if not isinstance(kind, str):
        raise InvalidRequestError("Missing required parameter 'operation'.", param="operation")
    return svc.operations.operation(kind, {k: v for k, v in body.items() if k not in BATCH_KEYS})


def _from_file(svc: Services, project: str, op: Operation, file_id: str, body: dict[str, Any]) -> BatchRecord:
    """A batch of the records in an uploaded file, parsed as they stream from disk."""
    record, stream = svc.files.open(project, file_id)
    fmt = detect_format(record.filename, body.get("format"))
    with stream:
        records = iter_records(stream, fmt, body.get("content_column"), svc.settings.max_lines)
        return _submit(svc, project, op, (Item(r.content, r.metadata) for r in records), body)


def _submit(svc: Services, project: str, op: Operation, items: Iterator[Any], body: dict[str, Any]) -> BatchRecord:
    window = body.get("completion_window") or "24h"
    return svc.operations.submit(project, op, items, str(window), body.get("metadata"))


def _form_value(value: str) -> Any:
    """A form field: JSON when it parses as a JSON array, object, number or boolean
    (`categories=["a","b"]`, `multi_label=true`), else the string itself."""
    if value[:1] in "[{" or value in ("true", "false", "null") or value.lstrip("-").replace(".", "", 1).isdigit():
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _created(batch: BatchRecord) -> dict[str, Any]:
    assert batch.operation is not None
    return {"batch_id": batch.id, "status": "queued", "total_items": batch.operation["items"]}


def _status(batch: BatchRecord) -> dict[str, Any]:
    status = {"validating": "queued"}.get(batch.status.value, batch.status.value)
    assert batch.operation is not None
    op, total = batch.operation["operation"], batch.operation["items"]
    # a batch cancelled (or expired) before validation read its lines has none: its items
    # all end failed, as its output rows say
    failed = batch.failed + (total - batch.total if batch.status.value in ("cancelled", "expired") else 0)
    done = batch.completed + failed
    return {
        "batch_id": batch.id,
        "status": status,
        "operation": op["kind"],
        "model": op["model"],
        "total_items": total,
        "completed_items": batch.completed,
        "failed_items": failed,
        "progress_percentage": round(100 * done / total, 1),
        "created_at": batch.created_at,
        "usage": {"input_tokens": batch.input_tokens, "output_tokens": batch.output_tokens, "cost": batch.cost},
    }


def _json_page(head: dict[str, Any], rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """`{..head, "data": [rows]}`, written row by row: a page of a million rows streams too."""
    yield orjson.dumps(head)[:-1] + b',"data":['
    for i, row in enumerate(rows):
        yield (b"," if i else b"") + orjson.dumps(row)
    yield b"]}"


def _page(rows: Iterator[dict[str, Any]], offset: int, limit: int | None) -> Iterator[dict[str, Any]]:
    for index, row in enumerate(rows):
        if index < offset:
            continue
        if limit is not None and index >= offset + limit:
            return
        yield row


def _csv(op: Operation, rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """`id`, `status`, `error`, one column per result field (nested values as JSON; a
    result without fields in one `result` column), then the first row's metadata columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    result_fields = result_fields_of(op)
    meta_fields: list[str] | None = None
    for row in rows:
        result = row["result"]
        if meta_fields is None:
            meta_fields = [k for k in row["metadata"] if k not in ("id", "status", "error", *result_fields)]
            writer.writerow(["id", "status", "error", *result_fields, *meta_fields])
        values = result if isinstance(result, dict) and result_fields != ["result"] else {"result": result}
        writer.writerow(
            [
                row["id"],
                row["status"],
                row["error"] or "",
                *(_cell(values.get(f)) for f in result_fields),
                *(_cell(row["metadata"].get(f)) for f in meta_fields),
            ]
        )
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
