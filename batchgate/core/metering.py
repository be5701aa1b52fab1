"""Who is calling, and what a synchronous request used.

The API (`api/metering.py`) sets the `Caller` of every authenticated request (batches and
files record its key) and opens a `SyncUsage` for each synchronous model request;
`MeteredBackend` adds to it what every interactive backend call used (an agent or an
operation on several items makes more than one), and once the answer is sent the
request's ledger row carries the sum. Batch lines are metered by the store instead.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from batchgate.core.errors import PermissionDeniedError
from batchgate.core.ports import Backend, BackendRequest, BackendResponse, StreamDelta


@dataclass(slots=True)
class SyncUsage:
    """What one synchronous API request used, summed over its backend calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    model: str | None = None  # the first call's, as asked for
    resolved_model: str | None = None
    backends: list[str] = field(default_factory=list)

    def add(
        self, asked: object, resolved: str | None, backend: str | None, tokens_in: int, tokens_out: int, cost: float
    ) -> None:
        self.input_tokens += tokens_in
        self.output_tokens += tokens_out
        self.cost += cost
        if self.model is None and isinstance(asked, str):
            self.model = asked
        self.resolved_model = self.resolved_model or resolved
        if backend and backend not in self.backends:
            self.backends.append(backend)


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str | None  # None: a server run with --insecure-no-auth
    project_id: str
    allowed_models: tuple[str, ...] | None = None  # None: any
    routing_profile: str | None = None  # the key's [profiles.NAME] (core/routing.py); None: none

    def check_model(self, model: object) -> None:
        """PermissionDeniedError if the key may not use `model`."""
        if self.allowed_models is not None and model not in self.allowed_models:
            allowed = ", ".join(self.allowed_models) or "none"
            raise PermissionDeniedError(
                f"The API key {self.key_id} may not use the model {model!r} (allowed: {allowed}).",
                param="model",
                code="model_not_allowed",
            )


# the caller of the API request being answered (None outside one: the worker, the CLI).
# Contextvars, since the services that create batches and files or call a backend run
# deep inside routes that know nothing of metering.
current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("batchgate_caller", default=None)


def caller_key_id() -> str | None:
    """The key of the API request being answered, to record on what it creates."""
    caller = current_caller.get()
    return caller.key_id if caller else None


# the usage of the synchronous request being answered; None outside one (batch lines,
# which the store meters)
current_usage: contextvars.ContextVar[SyncUsage | None] = contextvars.ContextVar("batchgate_usage", default=None)


def _check_caller(request: BackendRequest) -> BackendRequest:
    """A synchronous request's models must be the caller key's to use (a batch's lines are
    checked when it is validated, `core/jobs.py`); the request, with the key's routing
    profile, which the Router resolves its model through."""
    caller = current_caller.get() if request.interactive else None
    if caller is not None:
        caller.check_model(request.body.get("model"))
        if caller.routing_profile is not None and request.profile is None:
            return replace(request, profile=caller.routing_profile)
    return request


class MeteredBackend:
    """A Backend that checks each interactive call's model against the caller key's
    allowed models and adds its usage to the current request's `SyncUsage`. Batch lines
    pass through untouched (the store meters them)."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name

    async def execute(self, request: BackendRequest) -> BackendResponse:
        request = _check_caller(request)
        response = await self.inner.execute(request)
        usage = current_usage.get() if request.interactive else None
        if usage is not None:
            usage.add(
                request.body.get("model"), response.model, response.backend,
                response.input_tokens, response.output_tokens, response.cost,
            )  # fmt: skip
        return response

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        request = _check_caller(request)
        usage = current_usage.get() if request.interactive else None
        async for delta in self.inner.stream(request):
            if usage is not None and (delta.input_tokens or delta.output_tokens):
                usage.add(
                    request.body.get("model"), delta.model, delta.backend,
                    delta.input_tokens, delta.output_tokens, delta.cost,
                )  # fmt: skip
            yield delta

    def models(self) -> list[str]:
        return self.inner.models()

    async def aclose(self) -> None:
        await self.inner.aclose()
