"""/v1/prompts: prompt templates, their versions, publishing, and batch lines from them."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from batchgate.api.bodies import JsonBody
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import JSON_BODY_ERRORS, STORAGE_ERRORS, error_responses
from batchgate.app import Services
from batchgate.core.models import PromptRecord, PromptVersion
from batchgate.core.prompts import variables_of
from batchgate.protocol import prompts as wire

router = APIRouter(prefix="/v1/prompts", tags=["prompts"], responses=error_responses(401, 403, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]
Version = Annotated[int, Path(ge=1, le=2**63 - 1)]  # the store's integers are 64-bit
JSONL = {"application/jsonl": {"schema": {"type": "string", "description": "One batch request line per variable set."}}}


def _prompt(prompt: PromptRecord) -> wire.Prompt:
    return wire.Prompt(
        slug=prompt.slug,
        name=prompt.name,
        description=prompt.description,
        created_at=prompt.created_at,
        published_version=prompt.published_version,
    )


def _version(version: PromptVersion) -> wire.PromptVersionObject:
    return wire.PromptVersionObject(
        slug=version.slug,
        version=version.version,
        messages=version.messages,
        model_config=version.model_config,
        variables=variables_of(version.messages),
        created_at=version.created_at,
    )


@router.post("", response_model=wire.Prompt, responses=error_responses(*JSON_BODY_ERRORS, 409, *STORAGE_ERRORS))
def create_prompt(
    body: Annotated[wire.PromptCreate, Depends(JsonBody(wire.PromptCreate))], project: Project, svc: Svc
) -> wire.Prompt:
    """A new prompt; with `messages`, its version 1, published."""
    prompt = svc.prompts.create(project, body.slug, body.name or "", body.description or "", body.messages, body.config)
    return _prompt(prompt)


@router.get("", response_model=wire.PromptList)
def list_prompts(project: Project, svc: Svc) -> wire.PromptList:
    return wire.PromptList(data=[_prompt(p) for p in svc.prompts.all(project)])


@router.get("/{slug}", response_model=wire.PromptWithPublished, responses=error_responses(404))
def retrieve_prompt(slug: str, project: Project, svc: Svc) -> wire.PromptWithPublished:
    """The prompt, with its published version."""
    prompt = svc.prompts.get(project, slug)
    published = svc.prompts.version(project, slug, None) if prompt.published_version else None
    return wire.PromptWithPublished(
        **_prompt(prompt).model_dump(), published=_version(published) if published else None
    )


@router.post(
    "/{slug}/versions",
    response_model=wire.PromptVersionObject,
    responses=error_responses(*JSON_BODY_ERRORS, 404, *STORAGE_ERRORS),
)
def create_version(
    slug: str,
    body: Annotated[wire.PromptVersionCreate, Depends(JsonBody(wire.PromptVersionCreate))],
    project: Project,
    svc: Svc,
) -> wire.PromptVersionObject:
    """The prompt's next version; published at once with `publish: true`."""
    return _version(svc.prompts.add_version(project, slug, body.messages, body.config, body.publish))


@router.get("/{slug}/versions", response_model=wire.PromptVersionList, responses=error_responses(404))
def list_versions(slug: str, project: Project, svc: Svc) -> wire.PromptVersionList:
    return wire.PromptVersionList(data=[_version(v) for v in svc.prompts.versions(project, slug)])


@router.get("/{slug}/versions/{version}", response_model=wire.PromptVersionObject, responses=error_responses(400, 404))
def retrieve_version(slug: str, version: Version, project: Project, svc: Svc) -> wire.PromptVersionObject:
    return _version(svc.prompts.version(project, slug, version))


@router.post("/{slug}/versions/{version}/publish", response_model=wire.Prompt, responses=error_responses(400, 404))
def publish_version(slug: str, version: Version, project: Project, svc: Svc) -> wire.Prompt:
    """Make that version the published one."""
    return _prompt(svc.prompts.publish(project, slug, version))


@router.post(
    "/{slug}/jsonl",
    response_class=Response,
    responses={200: {"content": JSONL, "description": "A batch input file."}, **error_responses(400, 404)},
)
def batch_lines(
    slug: str,
    body: Annotated[wire.PromptLinesRequest, Depends(JsonBody(wire.PromptLinesRequest))],
    project: Project,
    svc: Svc,
) -> Response:
    """A batch input file (JSONL) that runs the prompt once per variable set: upload it to
    /v1/files and create a batch on it."""
    lines = svc.prompts.lines(project, slug, body.variables, body.version)
    return Response(b"".join(orjson.dumps(line) + b"\n" for line in lines), media_type="application/jsonl")
