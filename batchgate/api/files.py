"""/v1/files: upload (streamed), retrieve, list, content (streamed), delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from batchgate.api.convert import file_list, file_object
from batchgate.api.deps import project_id, services
from batchgate.api.uploads import receive_upload
from batchgate.app import Services
from batchgate.protocol import openai as wire

router = APIRouter(prefix="/v1/files", tags=["files"])

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]


@router.post("", response_model=wire.FileObject)
async def create_file(request: Request, project: Project, svc: Svc) -> wire.FileObject:
    with svc.files.upload(project) as upload:
        fields = await receive_upload(request, upload, svc.files.max_file_bytes)
        record = await run_in_threadpool(upload.commit, fields.get("purpose"), fields.get("filename"))
    return file_object(record)


@router.get("", response_model=wire.FileList)
def list_files(
    project: Project,
    svc: Svc,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query()] = 10_000,
    order: str = "desc",
) -> wire.FileList:
    return file_list(svc.files.list(project, purpose, after, limit, order))


@router.get("/{file_id}", response_model=wire.FileObject)
def retrieve_file(file_id: str, project: Project, svc: Svc) -> wire.FileObject:
    return file_object(svc.files.get(project, file_id))


@router.delete("/{file_id}", response_model=wire.FileDeleted)
def delete_file(file_id: str, project: Project, svc: Svc) -> wire.FileDeleted:
    svc.files.delete(project, file_id)
    return wire.FileDeleted(id=file_id)


@router.get("/{file_id}/content", response_model=None)
def file_content(file_id: str, project: Project, svc: Svc) -> FileResponse | StreamingResponse:
    record, path = svc.files.path(project, file_id)
    if path is not None:
        # sendfile from disk: constant memory whatever the file size
        return FileResponse(path, media_type="application/octet-stream", filename=record.filename)
    _, stream = svc.files.open(project, file_id)
    return StreamingResponse(iter(lambda: stream.read(1 << 20), b""), media_type="application/octet-stream")
