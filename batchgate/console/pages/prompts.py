"""Prompts: the list, a prompt's versions (messages and model_config), a new prompt, a
new version, publishing, and the differences between two versions."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from batchgate.console.pages.common import int_or_none
from batchgate.console.render import Context
from batchgate.core.errors import InvalidRequestError
from batchgate.core.models import PromptVersion
from batchgate.core.prompts import variables_of

router = APIRouter(include_in_schema=False)  # pages, not API operations


def _json(text: str, what: str, default: Any) -> Any:
    if not text.strip():
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"{what} is not valid JSON: {exc}", param=what) from None


def _text(version: PromptVersion) -> list[str]:
    """A version as lines to compare: its messages, then its model_config."""
    lines = []
    for m in version.messages:
        lines.append(f"[{m.get('role')}]")
        lines += str(m.get("content", "")).splitlines()
    lines.append("[model_config]")
    lines += json.dumps(version.model_config, indent=2, sort_keys=True).splitlines()
    return lines


@router.get("/prompts")
def prompt_list(ctx: Context) -> Response:
    ctx.require("read")
    return ctx.page("prompts.html", prompts=ctx.services.prompts.all(ctx.viewer.project_id))


@router.post("/prompts")
def create_prompt(
    ctx: Context,
    slug: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    system: Annotated[str, Form()] = "",
    user: Annotated[str, Form()] = "",
    config: Annotated[str, Form()] = "",
) -> Response:
    ctx.require("batch")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages.append({"role": "user", "content": user})
    config = _json(config, "model_config", {})
    ctx.services.prompts.create(ctx.viewer.project_id, slug.strip(), name, "", messages, config)
    return RedirectResponse(f"/console/prompts/{slug.strip()}", status_code=303)


@router.get("/prompts/{slug}")
def prompt_detail(slug: str, ctx: Context, request: Request) -> Response:
    ctx.require("read")
    project = ctx.viewer.project_id
    prompt = ctx.services.prompts.get(project, slug)
    versions = ctx.services.prompts.versions(project, slug)
    by_number = {v.version: v for v in versions}
    a = int_or_none(request.query_params.get("a"))
    b = int_or_none(request.query_params.get("b"))
    if a is None and b is None and len(versions) >= 2:
        a, b = versions[-2].version, versions[-1].version
    diff: list[tuple[str, str]] = []
    if a in by_number and b in by_number:
        for line in difflib.unified_diff(_text(by_number[a]), _text(by_number[b]), f"v{a}", f"v{b}", lineterm=""):
            kind = "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx"
            diff.append((kind, line))
    return ctx.page(
        "prompt.html",
        prompt=prompt,
        versions=list(reversed(versions)),
        variables={v.version: variables_of(v.messages) for v in versions},
        pretty=lambda value: json.dumps(value, indent=2, sort_keys=True),
        a=a,
        b=b,
        diff=diff,
    )


@router.post("/prompts/{slug}/versions")
def create_version(
    slug: str,
    ctx: Context,
    messages: Annotated[str, Form()] = "",
    config: Annotated[str, Form()] = "",
    publish: Annotated[str, Form()] = "",
) -> Response:
    ctx.require("batch")
    parsed = _json(messages, "messages", None)
    config = _json(config, "model_config", {})
    ctx.services.prompts.add_version(ctx.viewer.project_id, slug, parsed, config, publish=bool(publish))
    return RedirectResponse(f"/console/prompts/{slug}", status_code=303)


@router.post("/prompts/{slug}/publish")
def publish(slug: str, ctx: Context, version: Annotated[str, Form()] = "") -> Response:
    ctx.require("batch")
    number = int_or_none(version)
    if number is None:
        raise InvalidRequestError("Choose a version to publish.", param="version")
    ctx.services.prompts.publish(ctx.viewer.project_id, slug, number)
    return RedirectResponse(f"/console/prompts/{slug}", status_code=303)
