"""/v1/files: upload (streamed), retrieve, list, content (streamed), delete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from batchgate.api.convert import file_list, file_object
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import STORAGE_ERRORS, error_responses, model_schema
from batchgate.api.uploads import receive_upload
from batchgate.app import Services
from batchgate.core.retention import form_expiry
from batchgate.protocol import openai as wire

router = APIRouter(prefix="/v1/files", tags=["files"], responses=error_responses(401, 403, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]

# the upload is parsed as it streams in (api/uploads.py), so FastAPI cannot see its form
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": model_schema(wire.FileUpload)}},
    }
}
BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


class OctetStream(Response):
    media_type = "application/octet-stream"


@router.post(
    "", response_model=wire.FileObject, openapi_extra=UPLOAD_BODY, responses=error_responses(400, 413, *STORAGE_ERRORS)
)
async def create_file(request: Request, project: Project, svc: Svc) -> wire.FileObject:
    """Upload a file (multipart: `file`, `purpose`, optional `expires_after[anchor]` and
    `expires_after[seconds]`), streamed to disk."""
    with svc.files.upload(project) as upload:
        fields = await receive_upload(request, upload, svc.files.max_file_bytes)
        expires_after = form_expiry(fields)
        record = await run_in_threadpool(upload.commit, fields.get("purpose"), fields.get("filename"), expires_after)
    return file_object(record)


@router.get("", response_model=wire.FileList, responses=error_responses(400))
def list_files(
    project: Project,
    svc: Svc,
    purpose: wire.FilePurpose | None = None,
    after: Annotated[str | None, Query(description="A file id: the page starts after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> wire.FileList:
    """The project's files, newest first unless `order=asc`."""
    return file_list(svc.files.list(project, purpose, after, limit, order))


@router.get("/{file_id}", response_model=wire.FileObject, responses=error_responses(404))
def retrieve_file(file_id: str, project: Project, svc: Svc) -> wire.FileObject:
    return file_object(svc.files.get(project, file_id))


@router.delete("/{file_id}", response_model=wire.FileDeleted, responses=error_responses(404, 409))
def delete_file(file_id: str, project: Project, svc: Svc) -> wire.FileDeleted:
    """Delete a file; 409 `file_in_use` while an unfinished batch reads it."""
    svc.files.delete(project, file_id)
    return wire.FileDeleted(id=file_id)


@router.get(
    "/{file_id}/content",
    response_class=OctetStream,
    responses={200: {"content": BYTES, "description": "The file's bytes."}, **error_responses(404)},
)
def file_content(file_id: str, project: Project, svc: Svc) -> Response:
    """The file's bytes, streamed."""
    # opened here, before the answer starts: a DELETE of the file in between (or while it
    # streams) unlinks a file this descriptor still reads, where a path read later would be gone
    record, stream = svc.files.open(project, file_id)
    # the name as FileResponse sent it: RFC 5987 form when it is not plain ASCII
    quoted = quote(record.filename)
    name = f'filename="{record.filename}"' if quoted == record.filename else f"filename*=utf-8''{quoted}"
    headers = {"Content-Disposition": f"attachment; {name}"}
    return StreamingResponse(_chunks(stream), media_type=OctetStream.media_type, headers=headers)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        yield from iter(lambda: stream.read(1 << 20), b"")
