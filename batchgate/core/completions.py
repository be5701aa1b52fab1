"""Synchronous completions: one request answered now, on the same backend as batch lines
(ahead of them: the request is marked interactive), with errors as API errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from batchgate.core.errors import (
    BackendError,
    BackendRejectedError,
    BackendUnavailableError,
    BatchgateError,
    InvalidRequestError,
    NotFoundError,
)
from batchgate.core.ids import IdSequence
from batchgate.core.ports import Backend, BackendRequest, StreamDelta


class CompletionService:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._ids = IdSequence("sync-")

    async def complete(self, url: str, body: Any) -> dict[str, Any]:
        _check(body)
        try:
            response = await self.backend.execute(BackendRequest(self._ids.next(), url, body, interactive=True))
        except BackendError as exc:
            raise BackendUnavailableError(exc.message, code=exc.code) from exc
        if response.status_code != 200:
            raise _api_error(response.status_code, response.body)
        return response.body

    async def stream(self, url: str, body: Any) -> AsyncIterator[dict[str, Any]]:
        """OpenAI stream chunks (`chat.completion.chunk` or `text_completion`). A refusal is
        raised before the first chunk, so it can still be an ordinary HTTP error."""
        _check(body)
        request_id, created, model = self._ids.next(), int(time.time()), body["model"]
        chat = url == "/v1/chat/completions"

        def chunk(text: str | None, finish_reason: str | None = None) -> dict[str, Any]:
            if chat:
                delta = {} if text is None else {"content": text}
                choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
            kind = "chat.completion.chunk" if chat else "text_completion"
            return {"id": request_id, "object": kind, "created": created, "model": model, "choices": [choice]}

        deltas = self.backend.stream(BackendRequest(request_id, url, body, interactive=True))
        try:
            delta: StreamDelta | None = await anext(deltas)
        except BackendRejectedError as exc:
            raise _api_error(exc.status_code, exc.body) from exc
        except BackendError as exc:
            raise BackendUnavailableError(exc.message, code=exc.code) from exc
        if chat:
            opening = chunk("")
            opening["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            yield opening
        while delta is not None:
            if delta.text:
                yield chunk(delta.text)
            if delta.finish_reason is not None:
                yield chunk(None, delta.finish_reason)
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {
                        "prompt_tokens": delta.input_tokens,
                        "completion_tokens": delta.output_tokens,
                        "total_tokens": delta.input_tokens + delta.output_tokens,
                    }
                    yield {**chunk(None), "choices": [], "usage": usage}
            delta = await anext(deltas, None)

    def models(self) -> list[str]:
        return self.backend.models()


def _check(body: Any) -> None:
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequestError(
            "Missing required parameter 'model'.", param="model", code="missing_required_parameter"
        )


def _api_error(status_code: int, body: dict[str, Any]) -> BatchgateError:
    """The API error for a backend's error response (its status and OpenAI error body)."""
    error = body.get("error") or {}
    message, param, code = (
        error.get("message", "The backend refused the request."),
        error.get("param"),
        error.get("code"),
    )
    if status_code == 404:
        return NotFoundError(message, param=param, code=code)
    if 400 <= status_code < 500:
        return InvalidRequestError(message, param=param, code=code)
    return BatchgateError(message, param=param, code=code)
