"""/api: operations over records (AgentFlow-compatible), synchronously
(/api/completions/{operation}) and as batches (/api/batches, /api/files), with output as a
JSON page, JSONL or CSV. Parsing and mapping only: core/operation_runs.py and
core/operation_batches.py do the work."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from batchgate.api.bodies import JsonBody
from batchgate.api.deps import project_id, services
from batchgate.api.errors import invalid_request
from batchgate.api.openapi import JSON_BODY_ERRORS, STORAGE_ERRORS, error_responses
from batchgate.api.uploads import receive_upload
from batchgate.app import Services
from batchgate.core.operation_batches import MAX_RECORD_FILE_BYTES
from batchgate.protocol.operations import (
    BatchCreateRequest,
    CompletionResponse,
    EnrichRequest,
    ExtractRequest,
    LabelRequest,
    OperationBatch,
    OperationBatchList,
    OutputFormat,
    OutputPage,
    RecordsUpload,
    RunRequest,
    SummarizeRequest,
)

router = APIRouter(prefix="/api", tags=["operations"], responses=error_responses(401, 403, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]

# a bad item or parameter (400), too many items or tokens (413); a backend's error is the item's row
RUN_ERRORS = error_responses(*JSON_BODY_ERRORS, 413)


@router.post("/completions/label", response_model=CompletionResponse, responses=RUN_ERRORS)
async def label(body: Annotated[LabelRequest, Depends(JsonBody(LabelRequest))], svc: Svc) -> CompletionResponse:
    """Label each item with one of `categories` (or every one that applies, with `multi_label`)."""
    return await svc.operations.complete("label", body)


@router.post("/completions/summarize", response_model=CompletionResponse, responses=RUN_ERRORS)
async def summarize(
    body: Annotated[SummarizeRequest, Depends(JsonBody(SummarizeRequest))], svc: Svc
) -> CompletionResponse:
    """Summarise each item."""
    return await svc.operations.complete("summarize", body)


@router.post("/completions/extract", response_model=CompletionResponse, responses=RUN_ERRORS)
async def extract(body: Annotated[ExtractRequest, Depends(JsonBody(ExtractRequest))], svc: Svc) -> CompletionResponse:
    """Extract one JSON object per item."""
    return await svc.operations.complete("extract", body)


@router.post("/completions/enrich", response_model=CompletionResponse, responses=RUN_ERRORS)
async def enrich(body: Annotated[EnrichRequest, Depends(JsonBody(EnrichRequest))], svc: Svc) -> CompletionResponse:
    """Fill the typed `fields` for each item."""
    return await svc.operations.complete("enrich", body)


@router.post("/completions/run", response_model=CompletionResponse, responses=RUN_ERRORS)
async def run(body: Annotated[RunRequest, Depends(JsonBody(RunRequest))], svc: Svc) -> CompletionResponse:
    """Your own prompt on each item; `operation` names a custom run."""
    return await svc.operations.complete("run", body)


@router.post("/batches", response_model=OperationBatch, responses=error_responses(400, 404, 413, *STORAGE_ERRORS))
def create_batch(
    body: Annotated[BatchCreateRequest, Depends(JsonBody(BatchCreateRequest))], project: Project, svc: Svc
) -> OperationBatch:
    """An operation batch over `items`, or over the records of `file_id` (a file uploaded to /v1/files)."""
    return svc.operation_batches.create(project, body)


def _upload_form_schema() -> dict[str, Any]:
    """The multipart body of POST /api/files, for /openapi.json (its parts are read as
    they stream, not by FastAPI): the file, and every parameter as a form field."""
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    for name, field in RecordsUpload.model_fields.items():
        properties[field.alias or name] = {"type": "string", "description": field.description or ""}
    required = ["file", "operation"]
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@router.post(
    "/files",
    response_model=OperationBatch,
    openapi_extra=_upload_form_schema(),
    responses=error_responses(400, 413, *STORAGE_ERRORS),
)
async def upload_records(request: Request, project: Project, svc: Svc) -> OperationBatch:
    """A CSV / JSON / JSONL / text file of records, with the operation's parameters as form
    fields (read as `RecordsUpload.from_form` says), straight into an operation batch."""
    limit = min(svc.files.max_file_bytes, MAX_RECORD_FILE_BYTES)
    with svc.files.upload(project) as upload:
        fields = await receive_upload(request, upload, limit)
        filename = fields.pop("filename", None)
        fields.pop("purpose", None)  # sent by habit from /v1/files; records files need none
        try:
            form = RecordsUpload.from_form(fields)
        except ValidationError as exc:
            raise invalid_request(exc.errors(), in_body=True) from None  # the upload is discarded
        source = await run_in_threadpool(upload.commit, "batch", filename)
    return await run_in_threadpool(svc.operation_batches.upload, project, form, source.id)


@router.get("/batches", response_model=OperationBatchList)
def list_batches(project: Project, svc: Svc, after: str | None = None, limit: int = 20) -> OperationBatchList:
    """The project's operation batches, newest first (`after`: the last id of the previous page)."""
    return svc.operation_batches.list(project, after, limit)


@router.get("/batches/{batch_id}", response_model=OperationBatch, responses=error_responses(400, 404))
def retrieve_batch(batch_id: str, project: Project, svc: Svc) -> OperationBatch:
    return svc.operation_batches.status(project, batch_id)


@router.post("/batches/{batch_id}/cancel", response_model=OperationBatch, responses=error_responses(400, 404, 409))
def cancel_batch(batch_id: str, project: Project, svc: Svc) -> OperationBatch:
    return svc.operation_batches.cancel(project, batch_id)


@router.get(
    "/batches/{batch_id}/output",
    response_model=None,
    responses={
        200: {
            "model": OutputPage,
            "description": "format=json: one page of rows. format=jsonl: one row per line. format=csv: a table.",
            "content": {
                "application/jsonl": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        **error_responses(400, 404, 409),
    },
)
def batch_output(
    batch_id: str,
    project: Project,
    svc: Svc,
    format: OutputFormat = "json",
    # 64-bit, like every count the store keeps: a larger offset or limit is a 400 naming it
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> StreamingResponse:
    """An ended batch's rows from `offset`: one JSON page of up to `limit` rows (10,000 at
    most, the default), or JSONL / CSV to the end (or `limit` rows)."""
    output = svc.operation_batches.output(project, batch_id, format, offset, limit)
    headers = {"Content-Disposition": f'attachment; filename="{output.filename}"'} if output.filename else None
    return StreamingResponse(iterate_in_threadpool(output.chunks), media_type=output.media_type, headers=headers)
