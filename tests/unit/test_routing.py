"""Routing config parsing and the Router: routes, aliases, fallbacks, prices, and the
checks that reject a bad config or an unknown model with a message naming it."""

from __future__ import annotations

import asyncio
import itertools
import tomllib
from pathlib import Path

import pytest

from batchgate.core.errors import BackendError, BackendRejectedError
from batchgate.core.ports import BackendRequest, BackendResponse
from batchgate.core.routing import ConfigError, Router, load_config, parse_config
from batchgate.engines.openai_compat.limits import RateLimit
from batchgate.testing import ScriptedBackend

CONFIG = """
[backends.gpu]
base_url = "http://127.0.0.1:9/v1/"
api_key_env = "GPU_KEY"
max_concurrency = 8
requests_per_minute = 600

[models.big]
backend = "gpu"
model = "Org/Big-7B"
aliases = ["b"]
fallbacks = ["small"]
price = { input = 2.0, output = 6.0 }

[models.small]
backend = "local"
model = "smollm2-135m"
price = { input = 1.0, output = 1.0 }
batch_discount = 0.25
"""


def test_config_parses_routes_aliases_and_upstreams(tmp_path: Path) -> None:
    path = tmp_path / "batchgate.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    gpu = config.upstreams["gpu"]
    assert gpu.base_url == "http://127.0.0.1:9/v1" and gpu.max_concurrency == 8 and gpu.requests_per_minute == 600
    assert config.routes["b"] is config.routes["big"]
    assert [r.name for r in config.chain("b")] == ["big", "small"]
    assert config.chain("unknown") == []
    assert config.routes["big"].model == "Org/Big-7B"


def test_cost_uses_the_price_and_the_batch_discount() -> None:
    config = parse_config(tomllib.loads(CONFIG))
    big, small = config.routes["big"], config.routes["small"]
    assert big.cost(1_000_000, 500_000, batch=False) == pytest.approx(2.0 + 3.0)
    assert big.cost(1_000_000, 500_000, batch=True) == pytest.approx(2.5)  # default discount 50%
    assert small.cost(1_000_000, 0, batch=True) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[backends.x]\nbase_url = "ftp://h"', "[backends.x] base_url: must start with http://"),
        ('[backends.x]\nbase_url = "http://h"\napi_key = "sk-1"', "never put a key in the file"),
        ('[backends.x]\nbase_url = "http://h"\nmax_concurrency = 0', "max_concurrency: must be positive"),
        ('[backends.x]\nbase_url = "http://h"\ntimeout = 3', "[backends.x]: unknown key 'timeout'"),
        ("[backends.x]\nmax_retries = 2", "[backends.x]: missing 'base_url'"),
        ('[models.m]\nbackend = "gpu"', "[models.m] backend: 'gpu' is not defined; backends: local"),
        ('[models.m]\nbackend = "local"\nfallbacks = ["ghost"]', "fallbacks: 'ghost' is not a model"),
        ('[models.m]\nbackend = "local"\nprice = { input = 1 }', "[models.m] price: expected"),
        ('[models.m]\nbackend = "local"\nbatch_discount = 2', "batch_discount: expected a fraction"),
        ('[models.m]\nbackend = "local"\nbatch = "native"', "needs an upstream with /v1/batches"),
        ('[models.m]\nbackend = "local"\n[models.n]\nbackend = "local"\naliases = ["m"]', "'m' is already used"),
        ("[backends.local]\nmax_retries = 1", "'local' is the embedded engine"),
        ("nonsense = 1", "the top level: unknown key 'nonsense'"),
    ],
)
def test_bad_config_names_the_table_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), "t.toml")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[models\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_model_problem_lists_what_exists() -> None:
    config = parse_config(tomllib.loads(CONFIG), "routes.toml")

    def local_only(model: str) -> str | None:
        return None if model == "smollm2-135m" else f"The model {model!r} does not exist."

    assert config.model_problem("b", local_only) is None
    assert config.model_problem("smollm2-135m", local_only) is None
    problem = config.model_problem("gpt-9", local_only)
    assert problem is not None and "'gpt-9'" in problem and "Models in routes.toml: b, big, small" in problem
    assert config.model_problem("anything", None) is None  # a built-in backend that takes any name


class Recorder:
    """A backend answering with a fixed status (an error status raised, as backends do) or
    failing, recording what it was sent."""

    def __init__(self, name: str, status: int = 200, fail: bool = False):
        self.name, self.status, self.fail = name, status, fail
        self.seen: list[str] = []

    async def execute(self, request: BackendRequest) -> BackendResponse:
        self.seen.append(request.body["model"])
        if self.fail:
            raise BackendError("connection refused", code="upstream_unreachable")
        if self.status != 200:
            raise BackendRejectedError(BackendResponse(self.status, {"error": {"message": "busy"}}))
        return BackendResponse(200, {"usage": {}}, 1_000_000, 1_000_000, model=request.body["model"])

    def models(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        pass


def route(router: Router, model: str, interactive: bool = False) -> BackendResponse:
    request = BackendRequest("c1", "/v1/chat/completions", {"model": model, "messages": []}, interactive)
    return asyncio.run(router.execute(request))


def test_router_sends_the_upstream_name_and_prices_the_line() -> None:
    gpu, local = Recorder("gpu"), Recorder("local")
    router = Router(parse_config(tomllib.loads(CONFIG)), {"gpu": gpu, "local": local}, local)
    response = route(router, "b")
    assert gpu.seen == ["Org/Big-7B"] and local.seen == []
    assert response.backend == "gpu" and response.cost == pytest.approx(4.0)  # (2 + 6) * 50%
    assert route(router, "b", interactive=True).cost == pytest.approx(8.0)  # no discount for synchronous calls


@pytest.mark.parametrize("primary", [Recorder("gpu", status=503), Recorder("gpu", fail=True)])
def test_router_falls_back_when_the_upstream_is_overloaded_or_down(primary: Recorder) -> None:
    local = Recorder("local")
    router = Router(parse_config(tomllib.loads(CONFIG)), {"gpu": primary, "local": local}, local)
    response = route(router, "big")
    assert primary.seen == ["Org/Big-7B"] and local.seen == ["smollm2-135m"]
    assert response.status_code == 200 and response.backend == "local"


def test_router_does_not_fall_back_on_a_bad_request() -> None:
    gpu, local = Recorder("gpu", status=400), Recorder("local")
    router = Router(parse_config(tomllib.loads(CONFIG)), {"gpu": gpu, "local": local}, local)
    with pytest.raises(BackendRejectedError) as refused:
        route(router, "big")
    assert refused.value.response.status_code == 400 and refused.value.response.backend == "gpu"
    assert refused.value.status == 400 and local.seen == []


def test_router_returns_the_last_failure_when_every_route_fails() -> None:
    gpu, local = Recorder("gpu", status=429), Recorder("local", status=503)
    router = Router(parse_config(tomllib.loads(CONFIG)), {"gpu": gpu, "local": local}, local)
    with pytest.raises(BackendRejectedError) as failed:
        route(router, "big")
    assert failed.value.response.status_code == 503 and failed.value.response.backend == "local"
    assert failed.value.status == 502 and failed.value.code == "upstream_error"  # what a synchronous caller gets


def test_unlisted_models_go_to_the_builtin_backend_unchanged() -> None:
    scripted = ScriptedBackend()
    router = Router(parse_config({}), {"local": scripted}, scripted)
    response = route(router, "whatever")
    assert response.status_code == 200 and response.backend == "scripted" and response.cost == 0.0


def test_rate_limit_spreads_requests_after_a_one_second_burst() -> None:
    limit = RateLimit(per_minute=600)  # 10 a second
    waits = [limit.reserve() for _ in range(30)]
    assert all(w == 0 for w in waits[:11])  # the first, and a burst of one second's worth
    assert waits[-1] == pytest.approx(1.9, abs=0.05)  # then 0.1 s apart: the 30th at 1.9 s
    assert all(b > a for a, b in itertools.pairwise(waits[10:]))
