"""Synchronous completions: one request answered now, on the same backend as batch lines
(ahead of them: the request is marked interactive), with errors as API errors."""

from __future__ import annotations

from typing import Any

from batchgate.core.errors import (
    BackendError,
    BackendUnavailableError,
    BatchgateError,
    InvalidRequestError,
    NotFoundError,
)
from batchgate.core.ids import IdSequence
from batchgate.core.ports import Backend, BackendRequest


class CompletionService:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._ids = IdSequence("sync-")

    async def complete(self, url: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise InvalidRequestError(
                "Missing required parameter 'model'.", param="model", code="missing_required_parameter"
            )
        if body.get("stream"):
            raise InvalidRequestError(
                "Streaming responses are not supported yet.", param="stream", code="invalid_value"
            )
        try:
            response = await self.backend.execute(BackendRequest(self._ids.next(), url, body, interactive=True))
        except BackendError as exc:
            raise BackendUnavailableError(exc.message, code=exc.code) from exc
        if response.status_code == 200:
            return response.body
        error = response.body.get("error") or {}
        message, param, code = (
            error.get("message", "The backend refused the request."),
            error.get("param"),
            error.get("code"),
        )
        if response.status_code == 404:
            raise NotFoundError(message, param=param, code=code)
        if 400 <= response.status_code < 500:
            raise InvalidRequestError(message, param=param, code=code)
        raise BatchgateError(message, param=param, code=code)

    def models(self) -> list[str]:
        return self.backend.models()
