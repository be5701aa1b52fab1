"""Routing profiles ([profiles.NAME] in batchgate.toml): parsing, the errors that name the
table and key, and the Router resolving a request's model through its key's profile."""

from __future__ import annotations

import asyncio
import tomllib

import pytest

from batchgate.core.errors import BackendRejectedError
from batchgate.core.ports import BackendRequest
from batchgate.core.ratelimit import estimate_cost
from batchgate.core.routing import ConfigError, Router, parse_config
from batchgate.testing import ScriptedBackend

CONFIG = """
[models.m1]
backend = "local"
model = "up-m1"
price = { input = 1.0, output = 2.0 }

[models.m2]
backend = "local"
fallbacks = ["m1"]

[profiles.small]
models = ["m1"]

[profiles.small.routes.m3]
backend = "local"
model = "up-m3"

[profiles.swap.routes.m1]
model = "other-m1"

[profiles.all]
"""


def test_profiles_parse_with_subsets_and_overrides() -> None:
    cfg = parse_config(tomllib.loads(CONFIG), "batchgate.toml")
    small, swap, everything = cfg.profiles["small"], cfg.profiles["swap"], cfg.profiles["all"]
    assert small.models == frozenset({"m1"}) and set(small.routes) == {"m3"}
    assert small.allows("m1") and small.allows("m3") and not small.allows("m2")
    assert swap.models is None and swap.allows("m2") and swap.allows("anything")
    # an override keeps what it leaves out from [models.m1] (price, backend)
    assert swap.routes["m1"].model == "other-m1" and swap.routes["m1"].price == cfg.routes["m1"].price
    assert swap.routes["m1"].backend == "local"
    assert everything.models is None and not everything.routes
    scoped = cfg.for_profile("small")
    assert scoped is not None and scoped.routes["m3"].model == "up-m3" and scoped.routes["m1"].model == "up-m1"
    assert cfg.for_profile("nope") is None


def test_profile_problems_name_the_profile() -> None:
    cfg = parse_config(tomllib.loads(CONFIG), "batchgate.toml")
    assert cfg.model_problem("m1", None, profile="small") is None
    problem = cfg.model_problem("m2", None, profile="small")
    assert problem is not None and "'small'" in problem and "'m2'" in problem and "m1, m3" in problem
    unknown = cfg.model_problem("m1", None, profile="gone")
    assert unknown is not None and "'gone'" in unknown
    assert cfg.model_problem("m2", None) is None  # no profile: the whole config


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[profiles.p]\nmodels = "m1"', "[profiles.p] models: expected a list of model names"),
        ("[profiles.p]\nbogus = 1", "[profiles.p]: unknown key 'bogus'"),
        ('[profiles.p.routes.x]\nbackend = "nowhere"', "[profiles.p.routes.x] backend: 'nowhere' is not defined"),
        ("[profiles.p.routes.x]\nmodel = 'y'", "[profiles.p.routes.x]: missing 'backend'"),
        ('[profiles.p.routes.x]\nbackend = "local"\naliases = ["z"]', "[profiles.p.routes.x]: unknown key 'aliases'"),
        (
            '[profiles.p.routes.x]\nbackend = "local"\nfallbacks = ["ghost"]',
            "[profiles.p.routes.x] fallbacks: 'ghost' is not a model in this config",
        ),
        ("[profiles.p]\nroutes = 3", "[profiles.p.routes]: expected a table of tables"),
        ("profiles = 3", "[profiles]: expected a table of tables"),
    ],
)
def test_bad_profiles_are_named(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(toml), "batchgate.toml")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def _run(router: Router, model: str, profile: str | None) -> tuple[int, str | None, str]:
    request = BackendRequest("c", "/v1/chat/completions", {"model": model, "messages": []}, True, profile=profile)
    try:
        response = asyncio.run(router.execute(request))
    except BackendRejectedError as exc:
        error = exc.response.body["error"]
        return exc.response.status_code, error["code"], error["message"]
    return response.status_code, None, str(response.model)


def test_router_resolves_through_the_profile() -> None:
    cfg = parse_config(tomllib.loads(CONFIG), "batchgate.toml")
    scripted = ScriptedBackend()
    router = Router(cfg, {"local": scripted}, scripted)
    assert _run(router, "m1", None) == (200, None, "up-m1")
    assert _run(router, "m3", None) == (200, None, "m3")  # not a route without the profile
    assert _run(router, "m3", "small") == (200, None, "up-m3")
    assert _run(router, "m1", "swap") == (200, None, "other-m1")
    assert _run(router, "m2", "swap") == (200, None, "m2")
    status, code, message = _run(router, "m2", "small")
    assert (status, code) == (404, "model_not_found") and "'small'" in message
    status, code, message = _run(router, "m1", "gone")
    assert (status, code) == (404, "model_not_found") and "'gone'" in message


def test_a_prompt_is_counted_by_the_model_the_keys_profile_routes_it_to() -> None:
    """Rate limits charge a prompt's tokens as counted by the backend it will run on: for
    a key with a routing profile, the profile's route (core/ratelimit.estimate_cost)."""

    class Counting(ScriptedBackend):
        def prompt_tokens(self, url: str, body: dict[str, object]) -> int:
            return len(str(body["model"]))  # tells which model it was asked to count for

    local = Counting()
    router = Router(parse_config(tomllib.loads(CONFIG), "batchgate.toml"), {"local": local}, local)
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    assert router.prompt_tokens("/v1/chat/completions", body) == len("up-m1")
    assert router.prompt_tokens("/v1/chat/completions", body, "swap") == len("other-m1")
    assert estimate_cost(body, "/v1/chat/completions", router.prompt_tokens, "swap").input_tokens == len("other-m1")
