"""Prices (core/routing.py): every local catalog model has a documented default price, a
routing config's price overrides it, and batch lines pay (1 - batch_discount)."""

from __future__ import annotations

import asyncio

import pytest

from batchgate.core.ports import BackendRequest
from batchgate.core.routing import LOCAL_PRICES, Router, parse_config
from batchgate.engines.local.catalog import CATALOG
from batchgate.engines.local.embeddings import EMBEDDING_MODEL
from batchgate.testing import ScriptedBackend


def test_every_local_model_has_a_default_price() -> None:
    assert set(LOCAL_PRICES) == {*CATALOG, EMBEDDING_MODEL}


def run(router: Router, model: str, interactive: bool) -> float:
    request = BackendRequest(
        "r1",
        "/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "price me"}]},
        interactive,
    )
    response = asyncio.run(router.execute(request))
    assert response.input_tokens > 0 and response.output_tokens > 0
    expected = (response.input_tokens * 0.01 + response.output_tokens * 0.02) / 1_000_000
    return response.cost / expected


def test_the_builtin_backend_is_priced_at_the_default_and_batch_lines_pay_half() -> None:
    scripted = ScriptedBackend()
    router = Router(parse_config({}), {"local": scripted}, scripted)
    assert run(router, "smollm2-135m", interactive=True) == pytest.approx(1.0)
    assert run(router, "smollm2-135m", interactive=False) == pytest.approx(0.5)


def test_a_configured_price_and_discount_override_the_default() -> None:
    config = parse_config(
        {
            "models": {
                "smollm2-135m": {"backend": "local", "price": {"input": 0.02, "output": 0.04}, "batch_discount": 0.25}
            }
        }
    )
    scripted = ScriptedBackend()
    router = Router(config, {"local": scripted}, scripted)
    assert run(router, "smollm2-135m", interactive=True) == pytest.approx(2.0)
    assert run(router, "smollm2-135m", interactive=False) == pytest.approx(1.5)
    assert router.price("smollm2-135m", 1_000_000, 0, batch=True) == pytest.approx(0.015)
    assert router.price("unknown-model", 1_000_000, 1_000_000, batch=False) == 0.0
