"""Prompt templates: named, versioned chat messages with `{{variable}}` placeholders and a
`model_config` (model, temperature, max_tokens, response_format, …), one version
published at a time.

A batch line may name a prompt instead of carrying messages:
    {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
     "body": {"prompt_slug": "triage", "prompt_version": 2, "variables": {"ticket": "…"}}}
The line is checked at validation (the prompt and version exist, every variable the
template uses is given) and rendered when it runs: the messages are filled in, the
version's `model_config` is the base, and fields in the line's body override it. A
line without `prompt_version` uses the version published when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from batchgate.core.errors import ConflictError, InvalidRequestError, NotFoundError
from batchgate.core.ids import now
from batchgate.core.models import PromptRecord, PromptVersion
from batchgate.core.ports import Store

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ROLES = ("system", "user", "assistant", "developer")
PROMPT_KEYS = ("prompt_slug", "prompt_version", "variables")
MAX_VERSION = 2**63 - 1  # the largest version number a store's INTEGER column can hold


class PromptError(InvalidRequestError):
    """Why a line's prompt cannot be rendered: (code, message, param) for the line's error."""

    code: str

    def __init__(self, code: str, message: str, param: str):
        super().__init__(message, param=param, code=code)


def variables_of(messages: list[dict[str, Any]]) -> list[str]:
    """The variables the messages use, in order of first use."""
    found: dict[str, None] = {}
    for message in messages:
        for name in PLACEHOLDER.findall(str(message.get("content", ""))):
            found[name] = None
    return list(found)


def render(version: PromptVersion, body: dict[str, Any]) -> dict[str, Any]:
    """The request body of a prompt line: `model_config`, overridden by the line's own
    fields, with the messages filled in. Raises PromptError naming a missing variable."""
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise PromptError("invalid_type", "'body.variables' must be an object.", "body.variables")
    missing = [name for name in variables_of(version.messages) if name not in variables]
    if missing:
        raise PromptError(
            "missing_variable",
            f"prompt {version.slug!r} version {version.version} needs variable(s) {', '.join(missing)}.",
            "body.variables",
        )

    def fill(text: str) -> str:
        return PLACEHOLDER.sub(lambda m: _text(variables[m.group(1)]), text)

    messages = [{**m, "content": fill(str(m["content"]))} for m in version.messages]
    own = {key: value for key, value in body.items() if key not in PROMPT_KEYS}
    return {**version.model_config, **own, "messages": messages}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class PromptLines:
    """Resolves and renders batch lines that name a prompt, per project, caching versions
    (a batch names a handful; the store is asked once for each)."""

    def __init__(self, store: Store):
        self.store = store
        self._versions: dict[tuple[str, str, int | None], PromptVersion | None] = {}

    def version(self, project_id: str, body: dict[str, Any]) -> PromptVersion:
        slug, number = body.get("prompt_slug"), body.get("prompt_version")
        if not isinstance(slug, str) or not slug:
            raise PromptError("invalid_type", "'body.prompt_slug' must be a non-empty string.", "body.prompt_slug")
        if number is not None and (
            not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_VERSION
        ):
            raise PromptError(
                "invalid_type",
                f"'body.prompt_version' must be a positive integer of at most {MAX_VERSION}.",
                "body.prompt_version",
            )
        key = (project_id, slug, number)
        if key not in self._versions:
            self._versions[key] = self.store.get_prompt_version(project_id, slug, number)
        found = self._versions[key]
        if found is None:
            if self.store.get_prompt(project_id, slug) is None:
                raise PromptError("prompt_not_found", f"there is no prompt {slug!r}.", "body.prompt_slug")
            what = f"version {number}" if number is not None else "a published version"
            raise PromptError("prompt_version_not_found", f"prompt {slug!r} has no {what}.", "body.prompt_version")
        return found

    def render(self, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return render(self.version(project_id, body), body)

    def checker(self, project_id: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """One line's body rendered in this project (raises PromptError): validation's
        check, and the worker's rendering."""
        return lambda body: self.render(project_id, body)


class PromptService:
    """The /v1/prompts resource."""

    def __init__(self, store: Store):
        self.store = store

    def create(
        self,
        project_id: str,
        slug: object,
        name: str = "",
        description: str = "",
        messages: object = None,
        model_config: object = None,
    ) -> PromptRecord:
        """A new prompt; with `messages`, its version 1, published."""
        if not isinstance(slug, str) or not SLUG.match(slug):
            raise InvalidRequestError(
                "'slug' must be 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit.",
                param="slug",
            )
        if messages is not None:
            _check_version(messages, model_config)
        if not self.store.add_prompt(PromptRecord(project_id, slug, str(name or ""), str(description or ""), now())):
            raise ConflictError(f"A prompt {slug!r} already exists.", param="slug", code="prompt_exists")
        if messages is not None:
            self.add_version(project_id, slug, messages, model_config, publish=True)
        return self.get(project_id, slug)

    def get(self, project_id: str, slug: str) -> PromptRecord:
        prompt = self.store.get_prompt(project_id, slug)
        if prompt is None:
            raise NotFoundError(f"No such prompt: {slug}", param="slug")
        return prompt

    def all(self, project_id: str) -> list[PromptRecord]:
        return self.store.list_prompts(project_id)

    def versions(self, project_id: str, slug: str) -> list[PromptVersion]:
        self.get(project_id, slug)
        return self.store.list_prompt_versions(project_id, slug)

    def version(self, project_id: str, slug: str, version: int | None) -> PromptVersion:
        found = self.store.get_prompt_version(project_id, slug, version)
        if found is None:
            self.get(project_id, slug)
            what = f"version {version}" if version is not None else "a published version"
            raise NotFoundError(f"Prompt {slug!r} has no {what}.", param="version")
        return found

    def add_version(
        self, project_id: str, slug: str, messages: object, model_config: object, publish: bool = False
    ) -> PromptVersion:
        self.get(project_id, slug)
        checked_messages, checked_config = _check_version(messages, model_config)
        version = self.store.add_prompt_version(project_id, slug, checked_messages, checked_config, now())
        if publish:
            self.publish(project_id, slug, version.version)
        return version

    def publish(self, project_id: str, slug: str, version: int) -> PromptRecord:
        if not self.store.publish_prompt_version(project_id, slug, version):
            self.version(project_id, slug, version)  # raises the right 404
        return self.get(project_id, slug)

    def lines(self, project_id: str, slug: str, variable_sets: object, version: int | None) -> list[dict[str, Any]]:
        """Batch input lines that use the prompt, one per variable set (checked now)."""
        found = self.version(project_id, slug, version)
        if not isinstance(variable_sets, list) or not variable_sets:
            raise InvalidRequestError("'variables' must be a non-empty array of objects.", param="variables")
        lines = []
        for i, variables in enumerate(variable_sets):
            body: dict[str, Any] = {"prompt_slug": slug, "variables": variables}
            if version is not None:
                body["prompt_version"] = version
            try:
                render(found, body)
            except PromptError as exc:
                raise InvalidRequestError(f"variables[{i}]: {exc.message}", param=f"variables[{i}]") from None
            lines.append({"custom_id": f"{slug}-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        return lines


def _check_version(messages: object, model_config: object) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array of messages.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequestError(
                f"messages[{i}] must be an object with 'role' ({', '.join(ROLES)}) and 'content'.",
                param=f"messages[{i}]",
            )
        if not isinstance(message.get("content"), str):
            raise InvalidRequestError(f"messages[{i}].content must be a string.", param=f"messages[{i}].content")
    config = {} if model_config is None else model_config
    if not isinstance(config, dict):
        raise InvalidRequestError("'model_config' must be an object.", param="model_config")
    for key in ("messages", *PROMPT_KEYS):
        if key in config:
            raise InvalidRequestError(f"'model_config' cannot set {key!r}.", param=f"model_config.{key}")
    return messages, config
