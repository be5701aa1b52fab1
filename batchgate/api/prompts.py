"""/v1/prompts: prompt templates, their versions, publishing, and batch lines from them."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from batchgate.api.deps import json_object, project_id, services
from batchgate.app import Services
from batchgate.core.errors import InvalidRequestError
from batchgate.core.models import PromptRecord, PromptVersion
from batchgate.core.prompts import variables_of

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]


def _prompt(prompt: PromptRecord) -> dict[str, Any]:
    return {
        "object": "prompt",
        "slug": prompt.slug,
        "name": prompt.name,
        "description": prompt.description,
        "created_at": prompt.created_at,
        "published_version": prompt.published_version,
    }


def _version(version: PromptVersion) -> dict[str, Any]:
    return {
        "object": "prompt.version",
        "slug": version.slug,
        "version": version.version,
        "messages": version.messages,
        "model_config": version.model_config,
        "variables": variables_of(version.messages),
        "created_at": version.created_at,
    }


@router.post("")
async def create_prompt(request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    body = await json_object(request)
    prompt = svc.prompts.create(
        project,
        body.get("slug"),
        str(body.get("name") or ""),
        str(body.get("description") or ""),
        body.get("messages"),
        body.get("model_config"),
    )
    return _prompt(prompt)


@router.get("")
def list_prompts(project: Project, svc: Svc) -> dict[str, Any]:
    return {"object": "list", "data": [_prompt(p) for p in svc.prompts.all(project)]}


@router.get("/{slug}")
def retrieve_prompt(slug: str, project: Project, svc: Svc) -> dict[str, Any]:
    prompt = svc.prompts.get(project, slug)
    published = svc.prompts.version(project, slug, None) if prompt.published_version else None
    return {**_prompt(prompt), "published": _version(published) if published else None}


@router.post("/{slug}/versions")
async def create_version(slug: str, request: Request, project: Project, svc: Svc) -> dict[str, Any]:
    body = await json_object(request)
    publish = body.get("publish", False)
    if not isinstance(publish, bool):
        raise InvalidRequestError("'publish' must be a boolean.", param="publish")
    return _version(svc.prompts.add_version(project, slug, body.get("messages"), body.get("model_config"), publish))


@router.get("/{slug}/versions")
def list_versions(slug: str, project: Project, svc: Svc) -> dict[str, Any]:
    return {"object": "list", "data": [_version(v) for v in svc.prompts.versions(project, slug)]}


@router.get("/{slug}/versions/{version}")
def retrieve_version(slug: str, version: int, project: Project, svc: Svc) -> dict[str, Any]:
    return _version(svc.prompts.version(project, slug, version))


@router.post("/{slug}/versions/{version}/publish")
def publish_version(slug: str, version: int, project: Project, svc: Svc) -> dict[str, Any]:
    return _prompt(svc.prompts.publish(project, slug, version))


@router.post("/{slug}/jsonl")
async def batch_lines(slug: str, request: Request, project: Project, svc: Svc) -> Response:
    """A batch input file (JSONL) that runs the prompt once per variable set: upload it to
    /v1/files and create a batch on it."""
    body = await json_object(request)
    version = body.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise InvalidRequestError("'version' must be an integer.", param="version")
    lines = svc.prompts.lines(project, slug, body.get("variables"), version)
    return Response(b"".join(orjson.dumps(line) + b"\n" for line in lines), media_type="application/jsonl")
