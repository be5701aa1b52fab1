"""New job: a batch from an uploaded JSONL file, from a prompt and a JSON array of variable
sets, or an operation over a records file. Each calls the services the API calls."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from batchgate.api.uploads import receive_upload
from batchgate.console.pages.common import acting_as, int_or_none
from batchgate.console.render import Context, Ctx
from batchgate.core.errors import InvalidRequestError
from batchgate.core.models import BATCH_ENDPOINTS
from batchgate.protocol.operations import OPERATIONS, RecordsUpload

router = APIRouter(include_in_schema=False)  # pages, not API operations

WINDOWS = ("24h", "1h", "72h", "7d")
PREVIEW_LINES = 20


def _models(ctx: Ctx) -> list[str]:
    models = ctx.services.backend.models()
    allowed = ctx.viewer.key.allowed_models if ctx.viewer.key else None
    return [m for m in models if allowed is None or m in allowed]


@router.get("/jobs/new")
def new_job(ctx: Context, request: Request) -> Response:
    ctx.require("batch")
    prompts = ctx.services.prompts.all(ctx.viewer.project_id)
    return ctx.page(
        "new_job.html",
        tab=request.query_params.get("tab", "prompt"),
        endpoints=BATCH_ENDPOINTS,
        windows=WINDOWS,
        prompts=prompts,
        chosen=request.query_params.get("prompt", ""),
        models=_models(ctx),
        operations=OPERATIONS,
    )


def _metadata(text: str) -> dict[str, str] | None:
    """`key=value` lines as metadata (None if there are none)."""
    pairs: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise InvalidRequestError(f"metadata line {n}: write it as key=value.", param="metadata")
        pairs[name.strip()] = value.strip()
    return pairs or None


@router.post("/jobs/upload")
async def create_from_upload(ctx: Context, request: Request) -> Response:
    """A JSONL file of request lines, streamed to the blob store as the API's upload is."""
    ctx.require("batch")
    files = ctx.services.files
    with acting_as(ctx):
        with files.upload(ctx.viewer.project_id) as upload:
            fields = await receive_upload(request, upload, files.max_file_bytes)
            record = await run_in_threadpool(upload.commit, "batch", fields.get("filename"))
        batch = await run_in_threadpool(
            ctx.services.batches.create,
            ctx.viewer.project_id,
            input_file_id=record.id,
            endpoint=fields.get("endpoint") or "/v1/chat/completions",
            completion_window=fields.get("completion_window") or "24h",
            metadata=_metadata(fields.get("metadata", "")),
        )
    return RedirectResponse(f"/console/batches/{batch.id}", status_code=303)


def _prompt_lines(ctx: Ctx, slug: str, version: str, variables: str, model: str) -> list[dict[str, Any]]:
    try:
        variable_sets = orjson.loads(variables or "null")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The variable sets are not valid JSON: {exc}", param="variables") from None
    lines = ctx.services.prompts.lines(ctx.viewer.project_id, slug, variable_sets, int_or_none(version))
    if model:
        for line in lines:
            line["body"]["model"] = model  # the line's own fields override the prompt's model_config
    return lines


@router.post("/jobs/prompt/preview")
def preview_prompt_lines(
    ctx: Context,
    prompt: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    variables: Annotated[str, Form()] = "",
    model: Annotated[str, Form()] = "",
) -> Response:
    """The JSONL lines the form would submit (an htmx fragment)."""
    ctx.require("batch")
    lines = _prompt_lines(ctx, prompt, version, variables, model)
    shown = [orjson.dumps(line).decode() for line in lines[:PREVIEW_LINES]]
    return ctx.page("_prompt_preview.html", lines=shown, total=len(lines))


@router.post("/jobs/prompt")
def create_from_prompt(
    ctx: Context,
    prompt: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    variables: Annotated[str, Form()] = "",
    model: Annotated[str, Form()] = "",
    completion_window: Annotated[str, Form()] = "24h",
    metadata: Annotated[str, Form()] = "",
) -> Response:
    """Render the lines, upload them as a batch input file, create the batch on it."""
    ctx.require("batch")
    lines = _prompt_lines(ctx, prompt, version, variables, model)
    project = ctx.viewer.project_id
    with acting_as(ctx):
        with ctx.services.files.upload(project) as upload:
            for line in lines:
                upload.write(orjson.dumps(line) + b"\n")
            record = upload.commit("batch", f"{prompt}.jsonl")
        batch = ctx.services.batches.create(
            project,
            input_file_id=record.id,
            endpoint="/v1/chat/completions",
            completion_window=completion_window,
            metadata={"prompt": prompt, **(_metadata(metadata) or {})},
        )
    return RedirectResponse(f"/console/batches/{batch.id}", status_code=303)


@router.post("/jobs/operation")
async def create_operation(ctx: Context, request: Request) -> Response:
    """An operation over a records file, read as POST /api/files reads its form."""
    ctx.require("batch")
    files = ctx.services.files
    with acting_as(ctx):
        with files.upload(ctx.viewer.project_id) as upload:
            fields = await receive_upload(request, upload, files.max_file_bytes)
            filename = fields.pop("filename", None)
            try:
                form = RecordsUpload.from_form(fields)
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(p) for p in problem["loc"])
                raise InvalidRequestError(f"{where}: {problem['msg']}", param=where) from None
            source = await run_in_threadpool(upload.commit, "batch", filename)
        created = await run_in_threadpool(ctx.services.operation_batches.upload, ctx.viewer.project_id, form, source.id)
    return RedirectResponse(f"/console/batches/{created.batch_id}", status_code=303)
