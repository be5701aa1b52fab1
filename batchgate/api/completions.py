"""Synchronous endpoints on the batch backend: chat and text completions, embeddings, models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from batchgate.api.bodies import JsonBody
from batchgate.api.deps import project_id, services
from batchgate.api.openapi import BACKEND_ERRORS, JSON_BODY_ERRORS, error_responses, event_stream
from batchgate.app import Services
from batchgate.protocol import chat, embeddings
from batchgate.protocol import completions as text
from batchgate.protocol.models import Model, ModelList

router = APIRouter(prefix="/v1", tags=["completions"], responses=error_responses(401, 403, 500))

Project = Annotated[str, Depends(project_id)]
Svc = Annotated[Services, Depends(services)]
ChatBody = Annotated[chat.ChatCompletionRequest, Depends(JsonBody(chat.ChatCompletionRequest))]
TextBody = Annotated[text.CompletionRequest, Depends(JsonBody(text.CompletionRequest))]
EmbeddingBody = Annotated[embeddings.EmbeddingRequest, Depends(JsonBody(embeddings.EmbeddingRequest))]

# a backend's refusal keeps its status: 400 with the parameter, 404 model_not_found, 429, …
ANSWERED = error_responses(*JSON_BODY_ERRORS, 404, *BACKEND_ERRORS)
Answer = TypeVar("Answer", chat.ChatCompletion, text.Completion)


def _streamed(description: str, model: type[chat.ChatCompletionChunk | text.Completion]) -> dict[int | str, Any]:
    return {200: {"description": description, "content": event_stream(model)}, **ANSWERED}


async def _answer(
    svc: Services, url: str, body: chat.ChatCompletionRequest | text.CompletionRequest, answer: type[Answer]
) -> Answer | StreamingResponse:
    """The completion of `body`, as `answer`; with `stream: true`, its events."""
    request = body.model_dump(exclude_unset=True)
    if body.stream:
        return await _events(svc, url, request)
    return await svc.completions.complete(url, request, answer)


async def _events(svc: Services, url: str, body: dict[str, Any]) -> StreamingResponse:
    chunks = svc.completions.stream(url, body)
    first = await anext(chunks)  # a refusal is raised here, as an ordinary HTTP error

    async def events() -> AsyncIterator[bytes]:
        yield b"data: " + first.model_dump_json().encode() + b"\n\n"
        async for chunk in chunks:
            yield b"data: " + chunk.model_dump_json().encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post(
    "/chat/completions",
    response_model=chat.ChatCompletion,
    response_model_exclude_unset=True,  # an upstream's answer goes out as it came, no nulls added
    responses=_streamed(
        "With `stream: true`: `chat.completion.chunk` events, then `data: [DONE]`.", chat.ChatCompletionChunk
    ),
)
async def chat_completions(body: ChatBody, svc: Svc) -> chat.ChatCompletion | StreamingResponse:
    """A chat completion; with `stream: true`, OpenAI's server-sent events."""
    return await _answer(svc, "/v1/chat/completions", body, chat.ChatCompletion)


@router.post(
    "/completions",
    response_model=text.Completion,
    response_model_exclude_unset=True,
    responses=_streamed("With `stream: true`: `text_completion` events, then `data: [DONE]`.", text.Completion),
)
async def completions(body: TextBody, svc: Svc) -> text.Completion | StreamingResponse:
    """A text completion; with `stream: true`, OpenAI's server-sent events."""
    return await _answer(svc, "/v1/completions", body, text.Completion)


@router.post(
    "/embeddings",
    response_model=embeddings.CreateEmbeddingResponse,
    response_model_exclude_unset=True,
    responses=ANSWERED,
)
async def create_embeddings(body: EmbeddingBody, svc: Svc) -> embeddings.CreateEmbeddingResponse:
    """Embeddings of one input or an array of inputs."""
    request = body.model_dump(exclude_unset=True)
    return await svc.completions.complete("/v1/embeddings", request, embeddings.CreateEmbeddingResponse)


@router.get("/models", response_model=ModelList)
def list_models(project: Project, svc: Svc) -> ModelList:
    """The models this gateway serves: installed local models (with `default`) and routed names."""
    return ModelList(data=[Model(id=name) for name in svc.completions.models()])
