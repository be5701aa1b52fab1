"""Routing: which backend runs a request for a given `model`, under which upstream name,
with which fallbacks and at what price.

The routing config (`batchgate.toml`, path from `--config` / `BATCHGATE_CONFIG`):

    [backends.vllm]                     # an OpenAI-compatible upstream
    base_url = "http://gpu-1:8000/v1"
    api_key_env = "VLLM_API_KEY"        # the NAME of the env var holding the key
    max_concurrency = 64                # requests in flight to this upstream
    requests_per_minute = 600           # optional caps
    tokens_per_minute = 200000
    connect_timeout = 5                 # seconds
    read_timeout = 600
    max_retries = 4                     # on 429, 5xx, timeouts, connection errors
    responses = "native"                # it serves /v1/responses itself (default "chat":
                                        # batchgate translates them to chat completions)

    [models.qwen-7b]                    # the name users put in `model`
    backend = "vllm"
    model = "Qwen/Qwen2.5-7B-Instruct"  # the upstream's name (default: the same)
    aliases = ["qwen"]
    fallbacks = ["qwen2.5-1.5b"]        # other model names, tried in order
    price = { input = 0.20, output = 0.60 }  # USD per 1M tokens
    batch_discount = 0.5                # batch lines pay half (the default)
    batch = "native"                    # upstream /v1/batches instead of line by line

A backend named `local` (the embedded engine) always exists and needs no table. Models
the config does not list go to the built-in backend (`local` by default) unchanged.

    [profiles.cheap]                    # a routing profile: keys with `routing_profile = "cheap"`
    models = ["qwen-7b"]                # may use only these models (left out: every model)
    [profiles.cheap.routes.small]       # and `small`, routed this way (a route table: backend,
    backend = "vllm"                    # model, fallbacks, price, batch_discount; what it leaves
    model = "Qwen/Qwen2.5-1.5B-Instruct"  # out comes from [models.small] if there is one)

A profile is a named subset/override of the routing config: the synchronous requests of
a key with that profile and the lines of its batches resolve their model through it. A
model outside the profile's `models` and `routes` is refused (404 `model_not_found`, naming the
profile); a route's fallbacks are followed as the profile defines them.

The `[billing]` section configures the export of usage to Stripe (core/billing.py).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchgate.core.billing import BillingConfig, parse_billing
from batchgate.core.errors import BackendError, BackendRejectedError, BatchgateError
from batchgate.core.ports import Backend, BackendRequest, BackendResponse, StreamDelta

BUILTIN_BACKEND = "local"
# Prices of the local catalog's models when the config lists no price for them (USD per
# 1M tokens): what running them costs is the machine's time, so they are priced, low,
# by size, and a local batch has a real cost to meter and budget. A `[models.NAME]`
# table with `backend = "local"` and a `price` overrides them.
LOCAL_PRICES: dict[str, tuple[float, float]] = {
    "smollm2-135m": (0.01, 0.02),
    "qwen2.5-0.5b": (0.02, 0.04),
    "qwen2.5-1.5b": (0.05, 0.10),
    "all-minilm-l6-v2": (0.005, 0.0),
}
DEFAULT_BATCH_DISCOUNT = 0.5
# statuses after which another route may do better: the upstream is overloaded or broken
FALLBACK_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class ConfigError(BatchgateError):
    """A routing config that cannot be used; the message lists every problem found."""

    default_code = "invalid_config"

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"{source}: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """An OpenAI-compatible server (vLLM, llama.cpp, Ollama, OpenAI, another batchgate)."""

    name: str
    base_url: str  # up to and including the API version, e.g. http://host:8000/v1
    api_key_env: str | None = None
    max_concurrency: int = 64
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    max_retries: int = 4
    responses: str = "chat"  # "native": /v1/responses is forwarded to it as is

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per 1M input tokens
    output: float  # USD per 1M output tokens


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    backend: str
    model: str  # the name the backend knows the model by
    fallbacks: tuple[str, ...] = ()
    price: Price | None = None
    batch_discount: float = 0.5
    native_batch: bool = False

    def cost(self, input_tokens: int, output_tokens: int, batch: bool) -> float:
        if self.price is None:
            return 0.0
        full = (input_tokens * self.price.input + output_tokens * self.price.output) / 1_000_000
        return full * (1 - self.batch_discount) if batch else full


@dataclass(frozen=True, slots=True)
class Profile:
    """A `[profiles.NAME]` table: the models a key with this profile may use (None: any)
    and the routes it overrides or adds."""

    name: str
    models: frozenset[str] | None = None
    routes: Mapping[str, Route] = field(default_factory=dict)

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models or model in self.routes


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    routes: Mapping[str, Route] = field(default_factory=dict)  # by name and by alias
    source: str = "(no config)"
    billing: BillingConfig | None = None  # [billing]: the Stripe export (core/billing.py)
    profiles: Mapping[str, Profile] = field(default_factory=dict)  # [profiles.NAME]

    def for_profile(self, name: str) -> RoutingConfig | None:
        """The routing config as a key with routing profile `name` sees it (its routes
        overridden; no profiles of its own), or None when the config has no such profile."""
        profile = self.profiles.get(name)
        if profile is None:
            return None
        return RoutingConfig(self.upstreams, {**self.routes, **profile.routes}, f"{self.source} [profiles.{name}]")

    def profile_problem(self, profile: str, model: str) -> str | None:
        """Why a key with routing profile `profile` may not use `model`, or None."""
        found = self.profiles.get(profile)
        if found is None:
            return f"The routing profile {profile!r} is not in {self.source}."
        if not found.allows(model):
            names = sorted({*(found.models or ()), *found.routes})
            return (
                f"The model {model!r} is not in the routing profile {profile!r} of this API key "
                f"(its models: {', '.join(names) or 'none'})."
            )
        return None

    def chain(self, model: str) -> list[Route]:
        """The route for `model`, then its fallbacks' routes, in order (each once);
        empty when the config does not list the model."""
        chain: list[Route] = []
        names = [model]
        while names:
            route = self.routes.get(names.pop(0))
            if route is not None and route not in chain:
                chain.append(route)
                names.extend(route.fallbacks)
        return chain

    def names(self) -> list[str]:
        return sorted(self.routes)

    def native_upstream(self, models: set[str]) -> str | None:
        """The upstream whose own Batch API runs a batch of these models: when every one
        routes `batch = "native"` to the same upstream (fallbacks do not apply there)."""
        routes = [self.routes.get(model) for model in models]
        backends = {route.backend for route in routes if route is not None and route.native_batch}
        return backends.pop() if len(backends) == 1 and all(r and r.native_batch for r in routes) else None

    def native_responses(self, model: str) -> bool:
        """Whether `/v1/responses` requests for `model` go to its upstream as they are:
        when its route and every fallback's are on upstreams that serve them natively
        (any other route would need the translation to chat completions)."""
        chain = self.chain(model)
        return bool(chain) and all(
            route.backend in self.upstreams and self.upstreams[route.backend].responses == "native" for route in chain
        )

    def model_problem(
        self, model: str, builtin_problem: Callable[[str], str | None] | None, profile: str | None = None
    ) -> str | None:
        """Why `model` cannot run, or None when a route or the built-in backend (checked by
        `builtin_problem`; None: it takes any name) runs it; with `profile`, as a key with
        that routing profile sees the config."""
        if profile is not None:
            if (problem := self.profile_problem(profile, model)) is not None:
                return problem
            scoped = self.for_profile(profile)
            assert scoped is not None
            return scoped.model_problem(model, builtin_problem)
        if model in self.routes or builtin_problem is None:
            return None
        problem = builtin_problem(model)
        if problem is not None and self.routes:
            problem += f" Models in {self.source}: {', '.join(self.names())}."
        return problem


def load_config(path: Path | None) -> RoutingConfig:
    """The routing config in `path` (none: every model goes to the built-in backend).
    Raises ConfigError listing every problem, each naming its table and key."""
    if path is None:
        return RoutingConfig()
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), ["the file does not exist"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"not valid TOML ({exc})"]) from None
    return parse_config(data, str(path))


def parse_config(data: dict[str, Any], source: str = "config") -> RoutingConfig:
    problems: list[str] = []
    _unknown_keys(data, {"backends", "billing", "models", "profiles"}, "the top level", problems)
    upstreams: dict[str, UpstreamConfig] = {}
    for name, table in _tables(data, "backends", problems):
        upstream = _parse_upstream(name, table, problems)
        if upstream is not None:
            upstreams[name] = upstream
    routes: dict[str, Route] = {}
    for name, table in _tables(data, "models", problems):
        route = _parse_route(name, table, set(upstreams) | {BUILTIN_BACKEND}, problems)
        if route is None:
            continue
        for key in (name, *table.get("aliases", ())):
            if key in routes:
                problems.append(f"[models.{name}]: the name {key!r} is already used by [models.{routes[key].name}]")
            routes[key] = route
    for route in {r.name: r for r in routes.values()}.values():
        for fallback in route.fallbacks:
            if fallback not in routes:
                problems.append(f"[models.{route.name}] fallbacks: {fallback!r} is not a model in this config")
    billing = parse_billing(data.get("billing"), problems)
    profiles: dict[str, Profile] = {}
    for name, table in _tables(data, "profiles", problems):
        profile = _parse_profile(name, table, routes, set(upstreams) | {BUILTIN_BACKEND}, problems)
        if profile is not None:
            profiles[name] = profile
    if problems:
        raise ConfigError(source, problems)
    return RoutingConfig(upstreams, routes, source, billing, profiles)


_OVERRIDE_KEYS = {"backend", "model", "fallbacks", "price", "batch_discount"}


def _parse_profile(
    name: str, table: dict[str, Any], routes: Mapping[str, Route], backends: set[str], problems: list[str]
) -> Profile | None:
    where = f"[profiles.{name}]"
    before = len(problems)
    _unknown_keys(table, {"models", "routes"}, where, problems)
    models = table.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)):
        problems.append(f"{where} models: expected a list of model names, got {models!r}")
        models = None
    overrides: dict[str, Route] = {}
    for model, override in _tables(table, "routes", problems, f"profiles.{name}.routes"):
        base = routes.get(model)
        merged = {**({"backend": base.backend, "model": base.model} if base else {}), **override}
        route = _parse_route(model, merged, backends, problems, f"[profiles.{name}.routes.{model}]", _OVERRIDE_KEYS)
        if route is None:
            continue
        if base is not None:
            route = replace(
                route,
                fallbacks=route.fallbacks if "fallbacks" in override else base.fallbacks,
                price=route.price if "price" in override else base.price,
                batch_discount=route.batch_discount if "batch_discount" in override else base.batch_discount,
                native_batch=False,
            )
        overrides[model] = route
    for route in overrides.values():
        for fallback in route.fallbacks:
            if fallback not in routes and fallback not in overrides:
                problems.append(
                    f"[profiles.{name}.routes.{route.name}] fallbacks: {fallback!r} is not a model in this config"
                )
    if len(problems) > before:
        return None
    return Profile(name, frozenset(models) if models is not None else None, overrides)


_UPSTREAM_KEYS: dict[str, type | tuple[type, ...]] = {
    "base_url": str,
    "api_key_env": str,
    "max_concurrency": int,
    "requests_per_minute": int,
    "tokens_per_minute": int,
    "connect_timeout": (int, float),
    "read_timeout": (int, float),
    "max_retries": int,
    "responses": str,
}


def _parse_upstream(name: str, table: dict[str, Any], problems: list[str]) -> UpstreamConfig | None:
    where = f"[backends.{name}]"
    if name == BUILTIN_BACKEND:
        problems.append(f"{where}: 'local' is the embedded engine and takes no settings here")
        return None
    before = len(problems)
    _unknown_keys(table, set(_UPSTREAM_KEYS) | {"api_key"}, where, problems)
    if "api_key" in table:
        problems.append(f"{where} api_key: never put a key in the file; name its env var in 'api_key_env'")
    for key, kind in _UPSTREAM_KEYS.items():
        if key in table and (not isinstance(table[key], kind) or isinstance(table[key], bool)):
            problems.append(f"{where} {key}: expected {_kind_name(kind)}, got {table[key]!r}")
    base_url = table.get("base_url")
    if base_url is None:
        problems.append(f"{where}: missing 'base_url' (e.g. \"http://127.0.0.1:8000/v1\")")
    elif isinstance(base_url, str) and not base_url.startswith(("http://", "https://")):
        problems.append(f"{where} base_url: must start with http:// or https://, got {base_url!r}")
    for key in ("max_concurrency", "requests_per_minute", "tokens_per_minute", "connect_timeout", "read_timeout"):
        if isinstance(table.get(key), int | float) and table[key] <= 0:
            problems.append(f"{where} {key}: must be positive, got {table[key]!r}")
    if isinstance(table.get("max_retries"), int) and table["max_retries"] < 0:
        problems.append(f"{where} max_retries: must be 0 or more, got {table['max_retries']!r}")
    if isinstance(table.get("responses"), str) and table["responses"] not in ("chat", "native"):
        problems.append(f'{where} responses: expected "chat" or "native", got {table["responses"]!r}')
    if len(problems) > before:
        return None
    settings = {k: v for k, v in table.items() if k in _UPSTREAM_KEYS}
    return UpstreamConfig(name=name, **{**settings, "base_url": str(base_url).rstrip("/")})


def _parse_route(
    name: str,
    table: dict[str, Any],
    backends: set[str],
    problems: list[str],
    where: str | None = None,
    keys: set[str] | None = None,
) -> Route | None:
    where = where or f"[models.{name}]"
    before = len(problems)
    keys = keys or {"backend", "model", "aliases", "fallbacks", "price", "batch_discount", "batch"}
    _unknown_keys(table, keys, where, problems)
    backend = table.get("backend")
    if backend is None:
        problems.append(f"{where}: missing 'backend' (one of {', '.join(sorted(backends))})")
    elif backend not in backends:
        problems.append(f"{where} backend: {backend!r} is not defined; backends: {', '.join(sorted(backends))}")
    model = table.get("model", name)
    if not isinstance(model, str) or not model:
        problems.append(f"{where} model: expected the upstream's model name, got {model!r}")
    for key in ("aliases", "fallbacks"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problems.append(f"{where} {key}: expected a list of model names, got {value!r}")
    price = table.get("price")
    if price is not None and not (
        isinstance(price, dict)
        and set(price) == {"input", "output"}
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in price.values())
    ):
        problems.append(f"{where} price: expected {{ input = USD per 1M tokens, output = USD per 1M tokens }}")
    discount = table.get("batch_discount", 0.5)
    if not isinstance(discount, int | float) or isinstance(discount, bool) or not 0 <= discount <= 1:
        problems.append(f"{where} batch_discount: expected a fraction from 0 to 1, got {discount!r}")
    mode = table.get("batch", "lines")
    if mode not in ("lines", "native"):
        problems.append(f'{where} batch: expected "lines" or "native", got {mode!r}')
    elif mode == "native" and backend == BUILTIN_BACKEND:
        problems.append(f'{where} batch: "native" needs an upstream with /v1/batches, not the local engine')
    if len(problems) > before:
        return None
    return Route(
        name=name,
        backend=str(backend),
        model=model,
        fallbacks=tuple(table.get("fallbacks", ())),
        price=Price(float(price["input"]), float(price["output"])) if price else None,
        batch_discount=float(discount),
        native_batch=mode == "native",
    )


def _tables(
    data: dict[str, Any], key: str, problems: list[str], where: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    where = where or key
    section = data.get(key, {})
    if not isinstance(section, dict):
        problems.append(f"[{where}]: expected a table of tables")
        return []
    found = []
    for name, table in section.items():
        if isinstance(table, dict):
            found.append((name, table))
        else:
            problems.append(f"[{where}.{name}]: expected a table, got {table!r}")
    return found


def _unknown_keys(table: dict[str, Any], known: set[str], where: str, problems: list[str]) -> None:
    for key in table:
        if key not in known:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _with_model(request: BackendRequest, model: str) -> BackendRequest:
    """The request with a route's upstream name for its model (the caller's body is not
    changed); the request itself where the names agree (no copy per line)."""
    if request.body.get("model") == model:
        return request
    return replace(request, body={**request.body, "model": model})


async def _answered_by(backend: str, answer: Awaitable[BackendResponse]) -> BackendResponse:
    """The answer, or the backend's error answer, marked with the backend that gave it."""
    try:
        response = await answer
    except BackendRejectedError as exc:
        exc.response.backend = exc.response.backend or backend
        raise
    response.backend = response.backend or backend
    return response


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "a number" if isinstance(kind, tuple) else {str: "a string", int: "an integer"}[kind]


class Router:
    """A Backend that sends each request to its model's route, trying the fallbacks in
    order when a route fails (no response, or an overloaded/broken upstream's 429/5xx),
    and prices the response. Models the config does not list go to `default`."""

    name = "router"

    def __init__(self, config: RoutingConfig, backends: Mapping[str, Backend], default: Backend):
        self.config = config
        self.backends = backends
        self.default = default
        self._profiles: dict[str, RoutingConfig] = {}

    def _config(self, request: BackendRequest) -> RoutingConfig:
        """The config the request resolves its model through: its key's routing profile's
        (BackendRejectedError 404 `model_not_found` for a model outside it), else the whole."""
        if request.profile is None:
            return self.config
        model = str(request.body.get("model"))
        problem = self.config.profile_problem(request.profile, model)
        if problem is not None:
            error = {"message": problem, "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
            raise BackendRejectedError(BackendResponse(404, {"error": error}, backend=self.name))
        return self._profile_config(request.profile)

    def _profile_config(self, profile: str) -> RoutingConfig:
        scoped = self._profiles.get(profile)
        if scoped is None:
            scoped = self._profiles[profile] = self.config.for_profile(profile) or self.config
        return scoped

    def prompt_tokens(self, url: str, body: dict[str, Any], profile: str | None = None) -> int | None:
        """The prompt's tokens counted by the backend of the model's first route (through
        the key's routing `profile`, as the request will be routed), where it can count
        them (a local model already loaded); None elsewhere."""
        model = str(body.get("model"))
        routes = (self.config if profile is None else self._profile_config(profile)).chain(model)
        backend = self.backends[routes[0].backend] if routes else self.default
        count = getattr(backend, "prompt_tokens", None)
        return None if count is None else count(url, {**body, "model": routes[0].model} if routes else body)

    async def execute(self, request: BackendRequest) -> BackendResponse:
        routes = self._config(request).chain(str(request.body.get("model")))
        if not routes:
            response = await _answered_by(self.default.name, self.default.execute(request))
            if not response.cost:  # the built-in backend does not price its answers
                model = str(request.body.get("model"))
                response.cost = self.price(
                    model, response.input_tokens, response.output_tokens, not request.interactive
                )
            return response
        failure: BackendError | None = None
        for route in routes:
            routed = _with_model(request, route.model)
            try:
                response = await _answered_by(route.backend, self.backends[route.backend].execute(routed))
            except BackendRejectedError as exc:
                if exc.response.status_code not in FALLBACK_STATUSES:
                    raise  # the request itself is at fault: another route would refuse it too
                failure = exc
                continue
            except BackendError as exc:
                failure = exc
                continue
            response.cost = route.cost(response.input_tokens, response.output_tokens, batch=not request.interactive)
            return response
        assert failure is not None
        raise failure

    def price(self, model: str, input_tokens: int, output_tokens: int, batch: bool) -> float:
        """USD for this usage of `model`: its route's price, else its local default (0 for a
        model without either), with the batch discount for batch lines."""
        routes = self.config.chain(model)
        if routes:
            return routes[0].cost(input_tokens, output_tokens, batch)
        default = LOCAL_PRICES.get(model)
        if default is None:
            return 0.0
        route = Route(model, BUILTIN_BACKEND, model, price=Price(*default), batch_discount=DEFAULT_BATCH_DISCOUNT)
        return route.cost(input_tokens, output_tokens, batch)

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        model = str(request.body.get("model"))
        routes = self._config(request).chain(model)
        batch = not request.interactive
        if not routes:
            async for delta in self.default.stream(request):
                if delta.input_tokens or delta.output_tokens:
                    delta.cost = self.price(model, delta.input_tokens, delta.output_tokens, batch)
                    delta.model, delta.backend = delta.model or model, self.default.name
                yield delta
            return
        route = routes[0]  # a stream cannot fall back once text has been sent
        routed = _with_model(request, route.model)
        async for delta in self.backends[route.backend].stream(routed):
            if delta.input_tokens or delta.output_tokens:
                delta.cost = route.cost(delta.input_tokens, delta.output_tokens, batch)
                delta.model, delta.backend = route.model, route.backend
            yield delta

    def models(self) -> list[str]:
        return sorted({*self.config.names(), *self.default.models()})

    async def aclose(self) -> None:
        for backend in {id(b): b for b in [*self.backends.values(), self.default]}.values():
            await backend.aclose()
