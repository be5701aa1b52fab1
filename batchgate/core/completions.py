"""Synchronous completions: one request answered now, on the same backend as batch lines
(ahead of them: the request is marked interactive). A backend's errors propagate as
they are: they already carry the status a caller gets (core/errors.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from batchgate.core.errors import BackendError
from batchgate.core.ids import IdSequence
from batchgate.core.ports import Backend, BackendRequest, StreamDelta
from batchgate.protocol import chat
from batchgate.protocol import completions as text
from batchgate.protocol.completions import CompletionUsage

Answer = TypeVar("Answer", bound=BaseModel)
Chunk = chat.ChatCompletionChunk | text.Completion


class CompletionService:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._ids = IdSequence("sync-")

    async def complete(self, url: str, body: dict[str, Any], answer: type[Answer]) -> Answer:
        """The backend's answer to `body`, as the protocol model `answer`."""
        response = await self.backend.execute(BackendRequest(self._ids.next(), url, body, interactive=True))
        try:
            return answer.model_validate(response.body)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise BackendError(
                f"The backend's answer is not a valid {answer.__name__} (at {where!r}: {problem['msg']}).",
                code="invalid_backend_response",
            ) from None

    async def stream(self, url: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """OpenAI stream chunks (`chat.completion.chunk` or `text_completion`). A refusal is
        raised before the first chunk, so it can still be an ordinary HTTP error."""
        request_id, created, model = self._ids.next(), int(time.time()), body["model"]
        is_chat = url == "/v1/chat/completions"

        def chunk(content: str | None, finish_reason: Any = None, role: bool = False) -> Chunk:
            if is_chat:
                delta = chat.ChoiceDelta(role="assistant" if role else None, content=content)
                choice = chat.ChatCompletionChunkChoice(index=0, delta=delta, finish_reason=finish_reason)
                return chat.ChatCompletionChunk(id=request_id, created=created, model=model, choices=[choice])
            piece = text.CompletionChoice(index=0, text=content or "", finish_reason=finish_reason)
            return text.Completion(id=request_id, created=created, model=model, choices=[piece])

        deltas = self.backend.stream(BackendRequest(request_id, url, body, interactive=True))
        delta: StreamDelta | None = await anext(deltas)
        if is_chat:
            yield chunk("", role=True)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        while delta is not None:
            if delta.text:
                yield chunk(delta.text)
            if delta.finish_reason is not None:
                yield chunk(None, delta.finish_reason)
                if include_usage:
                    usage = CompletionUsage(
                        prompt_tokens=delta.input_tokens,
                        completion_tokens=delta.output_tokens,
                        total_tokens=delta.input_tokens + delta.output_tokens,
                    )
                    yield chunk(None).model_copy(update={"choices": [], "usage": usage})
            delta = await anext(deltas, None)

    def models(self) -> list[str]:
        return self.backend.models()
