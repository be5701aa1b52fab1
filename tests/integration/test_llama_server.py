"""llama-cpp-python's own OpenAI-compatible server on smollm2-135m, the real upstream for openai_compat tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from upstreams import CUSTOM_ID_HEADER, FaultProxy, Faults, llama_server

from batchgate.engines.local.catalog import ModelCatalog

ALIAS = "smollm2-135m"


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = ModelCatalog(tmp_path_factory.mktemp("models")).resolve("smollm2-135m")
    with llama_server(path, alias=ALIAS) as url:
        yield url


def chat(base: str, content: str = "What is 2+2?", **extra: object) -> httpx.Response:
    body = {"model": "any-name", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=60)


def test_lists_the_model_under_its_alias(llama_url: str) -> None:
    models = httpx.get(llama_url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == [ALIAS]


def test_answers_a_chat_completion_deterministically_at_temperature_0(llama_url: str) -> None:
    r = chat(llama_url, temperature=0)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "any-name"  # any model name is accepted, and echoed back
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["choices"][0]["finish_reason"] in ("length", "stop")
    assert 0 < answer["usage"]["completion_tokens"] <= 8
    again = chat(llama_url, temperature=0).json()
    assert again["choices"][0]["message"] == answer["choices"][0]["message"]


def test_context_overflow_is_an_openai_400(llama_url: str) -> None:
    r = chat(llama_url, "hi " * 3000)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_behind_the_fault_proxy(llama_url: str) -> None:
    with FaultProxy(llama_url, Faults(rate_503=1.0, max_per_key=1)) as proxy:
        body = {"model": ALIAS, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        headers = {CUSTOM_ID_HEADER: "line-1"}
        codes = [
            httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=60).status_code
            for _ in range(2)
        ]
    assert codes == [503, 200]
    assert proxy.attempts_by_key() == {"line-1": 2}
