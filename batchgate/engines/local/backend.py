"""The `local` backend: chat and text completions on the embedded llama.cpp engine.

A line's `model` is a catalog name (see `catalog.py`), `default` (the configured default
model) or a path to a `.gguf` file. Models load on first use, one engine per model.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF

from batchgate.core.errors import (
    BackendError,
    BackendRejectedError,
    BatchgateError,
    InvalidRequestError,
    NotFoundError,
)
from batchgate.core.ids import IdSequence
from batchgate.core.ports import BackendRequest, BackendResponse, StreamDelta
from batchgate.engines.local.catalog import ModelCatalog
from batchgate.engines.local.embeddings import EMBEDDING_MODEL, EmbeddingEngine
from batchgate.engines.local.embeddings import installed as embeddings_installed
from batchgate.engines.local.engine import Generation, LlamaEngine, SamplingParams, TokenLogprob
from batchgate.engines.local.grammar import response_format_schema, schema_grammar
from batchgate.engines.local.tools import ToolUse, parse_calls, prompt_messages, tool_use
from batchgate.protocol import chat, embeddings
from batchgate.protocol import completions as text
from batchgate.protocol.completions import CompletionUsage, PromptTokensDetails

MAX_CHOICES = 8


class LocalBackend:
    name = "local"

    def __init__(
        self,
        catalog: ModelCatalog,
        default_model: str,
        slots: int = 8,
        ctx_per_slot: int = 2048,
        threads: int = 2,
        kv_type: str = "q8_0",
        prefix_reuse: bool = True,
    ):
        self.catalog = catalog
        self.default_model = default_model
        self.slots, self.ctx_per_slot, self.threads, self.kv_type = slots, ctx_per_slot, threads, kv_type
        self.prefix_reuse = prefix_reuse
        self._engines: dict[Path, LlamaEngine] = {}
        self._loaded: dict[str, LlamaEngine] = {}  # by the model name requests use
        self._embeddings: EmbeddingEngine | None = None
        self._loading = threading.Lock()
        self._ids = IdSequence("cmpl-")
        self._call_ids = IdSequence("call_")

    async def execute(self, request: BackendRequest) -> BackendResponse:
        if request.url == "/v1/embeddings":
            return await self._embed(request.body)
        try:
            engine, tokens, params, tools = await self._prepare(request)
            # n choices are n sequences decoded together; seeded ones get seed, seed+1, …
            submitted = [
                engine.submit(
                    tokens, replace(params, seed=None if params.seed is None else params.seed + i), request.interactive
                )
                for i in range(_choices(request.body))
            ]
            generations = await asyncio.gather(*(asyncio.wrap_future(f) for f in submitted))
        except BackendError:
            raise  # the engine failed: no answer
        except BatchgateError as exc:
            raise _refusal(exc) from None
        model = str(request.body["model"])
        completion_tokens = sum(g.completion_tokens for g in generations)
        response = self._response(request.url, model, generations, len(tokens), completion_tokens, tools)
        return BackendResponse(200, response, len(tokens), completion_tokens, model)

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        loop = asyncio.get_running_loop()
        texts: asyncio.Queue[str] = asyncio.Queue()
        try:
            engine, tokens, params, tools = await self._prepare(request)
            if _choices(request.body) != 1:
                raise _BadRequest("Streaming returns one choice: 'n' must be 1.", "n")
            if tools is not None:  # a call is only known to be one, and valid, once complete
                raise _BadRequest(
                    "The local engine does not stream tool calls: set 'stream' to false (or 'tool_choice' to 'none').",
                    "stream",
                )

            def on_text(text: str) -> None:  # called from the engine's thread
                loop.call_soon_threadsafe(texts.put_nowait, text)

            future = engine.submit(tokens, params, True, on_text)
        except BackendError:
            raise  # the engine failed: no answer
        except BatchgateError as exc:
            raise _refusal(exc) from None
        # hold back what could be the start of a stop string: it is cut if the stop completes
        holdback = max((len(s) for s in params.stop), default=1) - 1
        done, sent = asyncio.wrap_future(future), 0
        while not done.done():
            text = asyncio.ensure_future(texts.get())
            waiting: list[asyncio.Future[Any]] = [text, done]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not text.done():
                text.cancel()
                continue
            safe = len(text.result()) - holdback
            if safe > sent:
                yield StreamDelta(text.result()[sent:safe])
                sent = safe
        g = done.result()
        yield StreamDelta(g.text[sent:], g.finish_reason, len(tokens), g.completion_tokens)

    async def _embed(self, body: dict[str, Any]) -> BackendResponse:
        try:
            model = str(body["model"])
            if model != EMBEDDING_MODEL:
                raise NotFoundError(
                    f"The embedding model {model!r} does not exist. Available: {EMBEDDING_MODEL}.",
                    param="model",
                    code="model_not_found",
                )
            texts, encoding = _embedding_inputs(body)
            engine = await asyncio.to_thread(self._embedder)
            if body.get("dimensions") not in (None, engine.dimensions):
                raise _BadRequest(f"This model's embeddings have {engine.dimensions} dimensions.", "dimensions")
            result = await asyncio.wrap_future(engine.submit(texts))
        except BackendError:
            raise  # the engine failed: no answer
        except BatchgateError as exc:
            raise _refusal(exc) from None
        answer = embeddings.CreateEmbeddingResponse(
            data=[
                embeddings.Embedding(index=i, embedding=_encode_vector(vector, encoding))
                for i, vector in enumerate(result.vectors)
            ],
            model=model,
            usage=embeddings.EmbeddingUsage(prompt_tokens=result.tokens, total_tokens=result.tokens),
        )
        return BackendResponse(200, answer.model_dump(), result.tokens, 0, model)

    def _embedder(self) -> EmbeddingEngine:
        with self._loading:
            if self._embeddings is None:
                self._embeddings = EmbeddingEngine()
            return self._embeddings

    async def _prepare(self, request: BackendRequest) -> tuple[LlamaEngine, list[int], SamplingParams, ToolUse | None]:
        """The engine, prompt tokens, sampling parameters and tools of a request (or an error)."""
        body = request.body
        if request.url not in ("/v1/chat/completions", "/v1/completions"):
            raise _BadRequest(
                f"The local engine does not serve {request.url} (it serves /v1/chat/completions, /v1/completions, "
                "/v1/embeddings and, through them, /v1/responses): route this model to an upstream that does.",
                "url",
            )
        params = _sampling_params(request.url, body)
        tools = tool_use(body) if request.url == "/v1/chat/completions" else None
        if tools is not None:
            params = replace(params, grammar=tools.grammar)
        engine = await asyncio.to_thread(self._engine, str(body["model"]))
        return engine, engine.tokenize(_prompt_text(engine, request.url, body, tools)), params, tools

    def prompt_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        """The request's prompt tokens by its model's own tokenizer and chat template, what
        rate limits charge at admission; None when that model is not loaded yet (counting
        is no reason to load one) or the engine would refuse the request anyway."""
        engine = self._loaded.get(str(body.get("model")))
        if engine is None or url not in ("/v1/chat/completions", "/v1/completions"):
            return None
        try:
            tools = tool_use(body) if url == "/v1/chat/completions" else None
            return len(engine.tokenize(_prompt_text(engine, url, body, tools)))
        except BatchgateError:  # refused later, or shut down meanwhile
            return None

    def _engine(self, model: str) -> LlamaEngine:
        with self._loading:  # the first lines of a batch arrive together: load (and verify) once
            path = self.catalog.resolve(self.default_model if model == "default" else model)
            engine = self._engines.get(path)
            if engine is None:
                engine = self._engines[path] = LlamaEngine(
                    path,
                    self.slots,
                    self.ctx_per_slot,
                    self.threads,
                    kv_type=self.kv_type,
                    prefix_reuse=self.prefix_reuse,
                )
            self._loaded[model] = engine
            return engine

    def _response(
        self,
        url: str,
        model: str,
        generations: list[Generation],
        prompt_tokens: int,
        completion_tokens: int,
        tools: ToolUse | None = None,
    ) -> dict[str, Any]:
        usage = CompletionUsage(
            prompt_tokens=prompt_tokens,  # the prompt is counted once, as OpenAI does for n > 1
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            # as OpenAI reports its prompt caching: the prompt tokens taken from the cache
            prompt_tokens_details=PromptTokensDetails(cached_tokens=generations[0].cached_tokens),
        )
        id_, created = self._ids.next(), int(time.time())
        answer: text.Completion | chat.ChatCompletion
        if url == "/v1/completions":
            answer = text.Completion(
                id=id_,
                created=created,
                model=model,
                usage=usage,
                choices=[
                    text.CompletionChoice(
                        index=i,
                        text=g.text,
                        finish_reason=g.finish_reason,  # type: ignore[arg-type]
                        logprobs=_text_logprobs(g.logprobs) if g.logprobs is not None else None,
                    )
                    for i, g in enumerate(generations)
                ],
            )
        else:
            answer = chat.ChatCompletion(
                id=id_,
                created=created,
                model=model,
                usage=usage,
                choices=[self._chat_choice(i, g, tools) for i, g in enumerate(generations)],
            )
        return answer.model_dump()

    def _chat_choice(self, index: int, g: Generation, tools: ToolUse | None) -> chat.ChatCompletionChoice:
        """A choice: the text, or with tools in play the calls the model made."""
        logprobs = None if g.logprobs is None else chat.ChoiceLogprobs(content=[_chat_logprob(t) for t in g.logprobs])
        calls = parse_calls(g.text, self._call_ids) if tools is not None else None
        if calls is None:
            message, finish_reason = chat.ChatCompletionMessage(content=g.text), g.finish_reason
        else:  # a call cut off by max_tokens is dropped, and the finish reason still says "length"
            message = chat.ChatCompletionMessage(
                content=None, tool_calls=[chat.ChatCompletionMessageToolCall.model_validate(c) for c in calls]
            )
            finish_reason = "tool_calls" if g.finish_reason == "stop" else g.finish_reason
        return chat.ChatCompletionChoice(
            index=index,
            message=message,
            finish_reason=finish_reason,  # type: ignore[arg-type]
            logprobs=logprobs,
        )

    def models(self) -> list[str]:
        names = [row.name for row in self.catalog.status() if row.installed]
        if self.default_model in names:
            names.insert(0, "default")
        return [*names, EMBEDDING_MODEL] if embeddings_installed() else names

    async def aclose(self) -> None:
        self._loaded.clear()  # nothing counts prompt tokens on an engine being closed
        for engine in self._engines.values():
            await asyncio.to_thread(engine.close)
        self._engines.clear()
        if self._embeddings is not None:
            await asyncio.to_thread(self._embeddings.close)
            self._embeddings = None


def _token(piece: bytes) -> str:
    return piece.decode(errors="replace")


def _chat_logprob(t: TokenLogprob) -> chat.ChatCompletionTokenLogprob:
    """OpenAI's chat shape: token, logprob, bytes and the top alternatives."""
    top = [chat.TopLogprob(token=_token(p), logprob=lp, bytes=list(p)) for p, lp in t.top]
    return chat.ChatCompletionTokenLogprob(
        token=_token(t.token), logprob=t.logprob, bytes=list(t.token), top_logprobs=top
    )


def _text_logprobs(tokens: list[TokenLogprob]) -> text.Logprobs:
    """OpenAI's legacy completions shape: parallel lists."""
    offsets, offset = [], 0
    for t in tokens:
        offsets.append(offset)
        offset += len(_token(t.token))
    return text.Logprobs(
        tokens=[_token(t.token) for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[{_token(p): lp for p, lp in t.top} for t in tokens],
        text_offset=offsets,
    )


def _refusal(exc: BatchgateError) -> BackendRejectedError:
    """A request the engine refuses, as its answer: the error's status and body."""
    return BackendRejectedError(BackendResponse(exc.status, exc.body()))


class _BadRequest(InvalidRequestError):
    """A parameter the engine cannot honour."""

    def __init__(self, message: str, param: str):
        super().__init__(message, param=param, code="invalid_value")


def _prompt_text(engine: LlamaEngine, url: str, body: dict[str, Any], tools: ToolUse | None) -> str:
    """The text the engine tokenizes: the chat template over the messages (and tools), or the prompt."""
    if url == "/v1/chat/completions":
        return engine.chat_prompt(*prompt_messages(_messages(body), tools, engine.renders_tools))
    if isinstance(prompt := body.get("prompt"), str):
        return prompt
    raise _BadRequest("'prompt' must be a string.", "prompt")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _BadRequest("'messages' must be a non-empty array of message objects.", "messages")
    return messages


# Parameters the engine does not implement yet: refused per line rather than ignored, so
# nobody gets unconstrained text where they asked for a schema.
def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("functions"):
        raise _BadRequest("The local engine does not support the deprecated 'functions': use 'tools'.", "functions")


def _embedding_inputs(body: dict[str, Any]) -> tuple[list[str], str]:
    """The texts of an embeddings request, and the encoding its vectors want."""
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise _BadRequest("'input' must be a non-empty string or array of non-empty strings.", "input")
    if len(texts) > 2048:
        raise _BadRequest("'input' may hold at most 2048 strings.", "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return texts, encoding


def _encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    # base64 is what the openai SDK asks for by default: little-endian float32s
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if encoding == "base64" else vector


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
        raise _BadRequest(f"'n' must be an integer between 1 and {MAX_CHOICES}.", "n")
    return n


def _sampling_params(url: str, body: dict[str, Any]) -> SamplingParams:
    _refuse_unsupported(body)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 256))
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise _BadRequest("'max_tokens' must be a positive integer.", "max_tokens")
    temperature = body.get("temperature", 1.0)
    top_p = body.get("top_p", 1.0)
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise _BadRequest("'temperature' must be a number between 0 and 2.", "temperature")
    if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise _BadRequest("'top_p' must be a number in (0, 1].", "top_p")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise _BadRequest("'stop' must be a string or up to 4 non-empty strings.", "stop")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise _BadRequest("'seed' must be an integer.", "seed")
    return SamplingParams(
        max_tokens, float(temperature), float(top_p), seed, tuple(stop), _grammar(body), _logprobs(url, body)
    )


def _logprobs(url: str, body: dict[str, Any]) -> int | None:
    """How many alternatives per token to report, or None for no logprobs: chat takes
    `logprobs: true` + `top_logprobs` (0-20), text completions `logprobs` (0-5)."""
    if url == "/v1/completions":
        value = body.get("logprobs")
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5:
            raise _BadRequest("'logprobs' must be an integer between 0 and 5.", "logprobs")
        return value
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20):
        raise _BadRequest("'top_logprobs' must be an integer between 0 and 20.", "top_logprobs")
    if not body.get("logprobs"):
        if top is not None:
            raise _BadRequest("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
        return None
    return top or 0


def _grammar(body: dict[str, Any]) -> str | None:
    """The GBNF grammar that enforces `response_format`: JSON, or JSON matching a schema."""
    schema = response_format_schema(body)
    if schema is None:
        return None
    if body["response_format"]["type"] == "json_object":
        return JSON_GBNF
    return schema_grammar(schema, "response_format.json_schema.schema", "response_format.json_schema")
