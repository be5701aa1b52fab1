"""The openai_compat backend and routing against real upstreams: llama-cpp-python's own
OpenAI-compatible server on smollm2-135m, behind a fault-injecting proxy (tests/upstreams.py).
The 2,000-line reliability batch runs against the benchmarks' fast mock upstream instead
(bench/mock_upstream.py, a real HTTP server): llama.cpp's server answers one request at a
time, about 80 ms each here, which would make that one test take minutes.

First the backend alone (retries per fault kind, Retry-After, final failures, streaming),
then whole batches through a `batchgate serve` process whose routing config points at the
upstream: reliability under 30% faults, fallbacks, prices, unknown models, and the
synchronous proxy through the official `openai` client.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from support import Server, chat_line, jsonl, parse_jsonl, wait_for
from upstreams import FAULT_KINDS, FaultProxy, Faults, llama_server

from batchgate.core.errors import BackendError, BackendRejectedError, UpstreamUnreachableError
from batchgate.core.ports import BackendRequest
from batchgate.core.routing import UpstreamConfig
from batchgate.engines.local.catalog import ModelCatalog
from batchgate.engines.openai_compat.backend import UpstreamBackend

CHAT = "/v1/chat/completions"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from mock_upstream import run_mock  # noqa: E402  (bench/ is not a package)


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = ModelCatalog(tmp_path_factory.mktemp("models")).resolve("smollm2-135m")
    with llama_server(path, alias="smollm2-135m") as url:
        # the server's first answer is slow (seconds, on a loaded machine): not in a test's timeout
        chat = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        httpx.post(url + "/v1/chat/completions", json=chat, timeout=120).raise_for_status()
        yield url


@pytest.fixture
def proxy(llama_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(llama_url) as p:
        yield p


@pytest.fixture
def mock_proxy() -> Iterator[FaultProxy]:
    with run_mock("test-upstream-mock", models="smollm2-135m") as mock, FaultProxy(mock.base_url[: -len("/v1")]) as p:
        yield p


def backend(url: str, **settings: float) -> UpstreamBackend:
    settings = {"read_timeout": 10.0, **settings}  # generous: a loaded machine answers slowly
    config = UpstreamConfig(name="llama", base_url=url + "/v1", **settings)  # type: ignore[arg-type]
    return UpstreamBackend(config, backoff_base=0.01)


def request(custom_id: str, content: str = "What is 2+2?", **body: object) -> BackendRequest:
    payload = {"model": "smollm2-135m", "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return BackendRequest(custom_id, CHAT, {**payload, "temperature": 0, **body})


async def execute(upstream: UpstreamBackend, req: BackendRequest):  # type: ignore[no-untyped-def]
    try:
        return await upstream.execute(req)
    finally:
        await upstream.aclose()


def test_passes_a_completion_through_with_its_usage(proxy: FaultProxy) -> None:
    response = asyncio.run(execute(backend(proxy.url), request("plain")))
    assert response.status_code == 200
    assert response.body["choices"][0]["message"]["content"]
    assert response.input_tokens > 0 and 0 < response.output_tokens <= 4
    # the custom_id travels as a header (the count is not checked: on a loaded machine a
    # dropped keep-alive connection may be retried, as it should be)
    assert set(proxy.attempts_by_key()) == {"plain"} and not any(r.fault for r in proxy.records)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_is_retried_until_the_upstream_answers(proxy: FaultProxy, kind: str) -> None:
    proxy.faults = Faults.always(kind, max_per_key=2, slow_seconds=4.0, retry_after="0")
    # the slow fault must outlast the read timeout; the others get a generous one
    upstream = backend(proxy.url, read_timeout=2.0) if kind == "slow" else backend(proxy.url)
    response = asyncio.run(execute(upstream, request(f"fault-{kind}")))
    assert response.status_code == 200, response.body
    assert proxy.attempts_by_key() == {f"fault-{kind}": 3}
    assert proxy.count(kind) == 2


def test_retry_after_is_honoured(proxy: FaultProxy) -> None:
    proxy.faults = Faults.always("429", max_per_key=1, retry_after="1.5")
    started = time.perf_counter()
    response = asyncio.run(execute(backend(proxy.url), request("patient")))
    assert response.status_code == 200
    assert time.perf_counter() - started >= 1.5  # not the 10 ms backoff of this backend


def test_when_retries_run_out_the_upstream_status_and_message_are_kept(proxy: FaultProxy) -> None:
    proxy.faults = Faults.always("503", retry_after=None)
    with pytest.raises(BackendRejectedError) as refused:
        asyncio.run(execute(backend(proxy.url, max_retries=2), request("doomed")))
    assert refused.value.response.status_code == 503 and not refused.value.transient
    assert refused.value.response.body["error"]["message"]
    assert proxy.attempts_by_key() == {"doomed": 3}


def test_other_client_errors_are_not_retried(proxy: FaultProxy) -> None:
    with pytest.raises(BackendRejectedError) as refused:
        asyncio.run(execute(backend(proxy.url), request("huge", "hi " * 3000)))
    assert refused.value.response.status_code == 400 == refused.value.status
    assert refused.value.response.body["error"]["code"] == "context_length_exceeded"
    assert proxy.attempts_by_key() == {"huge": 1}


def test_no_response_at_all_is_a_backend_error_naming_the_upstream() -> None:
    closed = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BackendError, match=r"Upstream 'llama'.*after 2 attempts") as caught:
        asyncio.run(execute(backend(closed, max_retries=1), request("nowhere")))
    assert isinstance(caught.value, UpstreamUnreachableError) and not caught.value.transient
    assert caught.value.code == "upstream_unreachable" and caught.value.status == 503


def test_streamed_chunks_reassemble_to_the_plain_completion(proxy: FaultProxy) -> None:
    upstream = backend(proxy.url)

    async def both() -> tuple[str, list[str], object]:
        try:
            # llama.cpp's server answers a prompt it evaluated whole slightly differently from
            # the same prompt served from its prefix cache: warm the cache, then compare
            await upstream.execute(request("s0", "Name a colour.", max_tokens=12))
            plain = await upstream.execute(request("s1", "Name a colour.", max_tokens=12))
            deltas = [d async for d in upstream.stream(request("s2", "Name a colour.", max_tokens=12))]
        finally:
            await upstream.aclose()
        return plain.body["choices"][0]["message"]["content"], [d.text for d in deltas], deltas[-1]

    text, pieces, last = asyncio.run(both())
    assert "".join(pieces) == text
    assert last.finish_reason in ("stop", "length") and last.output_tokens > 0  # type: ignore[attr-defined]


# ---- batches through a gateway whose routing config points at the upstream ---------


def gateway(start_server: Callable[..., Server], tmp_path: Path, config: str, **env: str) -> Server:
    path = tmp_path / "batchgate.toml"
    path.write_text(config)
    return start_server({"BATCHGATE_CONFIG": str(path), "BATCHGATE_RETRY_BACKOFF": "0.01", **env}, insecure=True)


def run_batch(server: Server, lines: list[dict], timeout: float = 240) -> tuple[dict, list[dict], list[dict]]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        file_id = c.post("/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()[
            "id"
        ]
        batch = c.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
        ).json()
        batch = wait_for(
            lambda: (
                (b := c.get(f"/v1/batches/{batch['id']}").json())["status"]
                in ("completed", "failed", "expired", "cancelled")
                and b
            ),
            timeout,
            0.2,
        )
        files = [
            parse_jsonl(c.get(f"/v1/files/{batch[k]}/content").content) if batch.get(k) else []
            for k in ("output_file_id", "error_file_id")
        ]
    return batch, files[0], files[1]


def upstream_config(url: str, **extra: object) -> str:
    settings = {"max_concurrency": 16, "read_timeout": 10.0, "max_retries": 4, **extra}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f"""
[backends.llama]
base_url = "{url}/v1"
{lines}

[models.smol]
backend = "llama"
model = "smollm2-135m"
price = {{ input = 1.0, output = 2.0 }}
"""


def test_a_2000_line_batch_through_30_percent_faults_loses_and_duplicates_nothing(
    start_server: Callable[..., Server], tmp_path: Path, mock_proxy: FaultProxy
) -> None:
    proxy = mock_proxy
    # 30% of attempts fail, each line at most 3 times: with 4 retries every line must
    # succeed, exactly once, within 4 attempts
    proxy.faults = Faults(
        rate_429=0.08, rate_500=0.05, rate_503=0.05, rate_reset=0.05, rate_truncated=0.04, rate_slow=0.03,
        retry_after="0.05", slow_seconds=2.0, max_per_key=3,
    )  # fmt: skip
    server = gateway(start_server, tmp_path, upstream_config(proxy.url, read_timeout=1.0))  # < slow_seconds
    lines = [chat_line(f"r{i}", f"Say {i}.", model="smol", max_tokens=1, temperature=0) for i in range(2000)]
    batch, output, errors = run_batch(server, lines)
    assert batch["status"] == "completed" and errors == []
    assert sorted(row["custom_id"] for row in output) == sorted(line["custom_id"] for line in lines)
    assert batch["request_counts"] == {"total": 2000, "completed": 2000, "failed": 0}
    attempts = proxy.attempts_by_key()
    assert set(attempts) == {line["custom_id"] for line in lines}
    assert max(attempts.values()) <= 4
    faulted = sum(1 for r in proxy.records if r.fault)
    assert faulted > 0.2 * len(proxy.records)  # the faults really happened
    assert all(row["response"]["status_code"] == 200 for row in output)
    # usage and cost: 1 USD per 1M input, 2 per 1M output, half price in a batch
    usage = batch["usage"]
    expected = (usage["input_tokens"] * 1.0 + usage["output_tokens"] * 2.0) / 1e6 * 0.5
    assert usage["cost"] == pytest.approx(expected, rel=1e-6) and usage["cost"] > 0
    assert sum(row["response"]["cost"] for row in output) == pytest.approx(expected, rel=1e-6)


def test_final_upstream_failures_carry_its_status_and_message(
    start_server: Callable[..., Server], tmp_path: Path, proxy: FaultProxy
) -> None:
    proxy.faults = Faults.always("503", retry_after=None)
    server = gateway(start_server, tmp_path, upstream_config(proxy.url, max_retries=1))
    batch, output, errors = run_batch(server, [chat_line(f"f{i}", model="smol", max_tokens=1) for i in range(3)])
    assert batch["status"] == "completed" and output == []
    assert [e["response"]["status_code"] for e in errors] == [503, 503, 503]
    assert {e["response"]["body"]["error"]["message"] for e in errors} == {
        "The server is overloaded or not ready yet (injected)."
    }
    assert max(proxy.attempts_by_key().values()) == 2


def test_a_down_upstream_falls_back_to_the_next_model(
    start_server: Callable[..., Server], tmp_path: Path, proxy: FaultProxy
) -> None:
    config = (
        upstream_config(proxy.url)
        + f"""
[backends.down]
base_url = "http://127.0.0.1:{_closed_port()}/v1"
max_retries = 0

[models.primary]
backend = "down"
fallbacks = ["smol"]
"""
    )
    server = gateway(start_server, tmp_path, config)
    batch, output, errors = run_batch(server, [chat_line(f"p{i}", model="primary", max_tokens=2) for i in range(5)])
    assert batch["status"] == "completed" and errors == [] and len(output) == 5
    assert {row["response"]["body"]["model"] for row in output} == {"smollm2-135m"}


def test_unknown_models_fail_validation_naming_the_line(
    start_server: Callable[..., Server], tmp_path: Path, proxy: FaultProxy
) -> None:
    server = gateway(start_server, tmp_path, upstream_config(proxy.url), BATCHGATE_BACKEND="local")
    lines = [chat_line("a", model="smol"), chat_line("b", model="gpt-17"), chat_line("c", model="smollm2-135m")]
    batch, _, _ = run_batch(server, lines)
    assert batch["status"] == "failed"
    [error] = batch["errors"]["data"]
    assert error["line"] == 2 and error["param"] == "body.model" and error["code"] == "model_not_found"
    assert "'gpt-17'" in error["message"] and "smol" in error["message"]


def test_synchronous_requests_route_through_the_official_client(
    start_server: Callable[..., Server], tmp_path: Path, proxy: FaultProxy
) -> None:
    server = gateway(start_server, tmp_path, upstream_config(proxy.url))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(2):  # the second answer comes from the upstream's prefix cache, as the stream's will
        answer = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0
        )
    assert answer.choices[0].message.content and answer.usage and answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == (
        answer.choices[0].message.content
    )
    assert "smol" in [m.id for m in client.models.list()]
    proxy.faults = Faults.always("429", max_per_key=1, retry_after="0")
    again = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert again.choices[0].finish_reason in ("stop", "length")  # the gateway retried the 429 itself


def test_upstream_statuses_reach_a_synchronous_caller(
    start_server: Callable[..., Server], tmp_path: Path, proxy: FaultProxy
) -> None:
    # no retries in the gateway: each fault reaches the caller as the status it maps to (no
    # request reaches llama.cpp, so the 1 s read timeout holds only for the injected delay)
    server = gateway(start_server, tmp_path, upstream_config(proxy.url, max_retries=0, read_timeout=1.0))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    ask = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}

    proxy.faults = Faults.always("429", retry_after="7")
    with pytest.raises(openai.RateLimitError) as limited:  # 429 stays 429, never a 400
        client.chat.completions.create(**ask)
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.code == "rate_limit_exceeded" and "injected" in limited.value.message
    with pytest.raises(openai.RateLimitError):  # a stream is refused the same way, before any event
        client.chat.completions.create(**ask, stream=True)

    proxy.faults = Faults.always("500")
    with pytest.raises(openai.InternalServerError) as broken:
        client.chat.completions.create(**ask)
    assert broken.value.status_code == 502 and broken.value.code == "upstream_error"
    assert "HTTP 500" in broken.value.message

    proxy.faults = Faults.always("slow", slow_seconds=4.0)  # longer than the 1 s read timeout
    with pytest.raises(openai.InternalServerError) as late:
        client.chat.completions.create(**ask)
    assert late.value.status_code == 504 and late.value.code == "upstream_timeout"


def test_an_unreachable_upstream_is_a_503(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = gateway(start_server, tmp_path, upstream_config(f"http://127.0.0.1:{_closed_port()}", max_retries=0))
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unreachable"


def test_request_rate_cap_paces_a_batch(start_server: Callable[..., Server], tmp_path: Path) -> None:
    with run_mock("test-rate-mock", models="smollm2-135m") as mock:
        config = upstream_config(mock.base_url[: -len("/v1")], requests_per_minute=600)  # 10 a second
        server = gateway(start_server, tmp_path, config)
        started = time.perf_counter()
        batch, output, _ = run_batch(server, [chat_line(f"q{i}", model="smol") for i in range(31)])
        elapsed = time.perf_counter() - started
    assert batch["status"] == "completed" and len(output) == 31
    assert elapsed >= 1.9  # 11 at once (a second's burst), then 20 more at 0.1 s apart


def test_embeddings_route_to_an_upstream_synchronously_and_in_batches(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    with run_mock("test-embed-mock", models="smollm2-135m") as mock:
        server = gateway(start_server, tmp_path, upstream_config(mock.base_url[: -len("/v1")]))
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        vectors = client.embeddings.create(model="smol", input=["a", "b"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0
        assert mock.stats()["/v1/embeddings"] == 1
        line = {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "smol", "input": "x"}}
        with httpx.Client(base_url=server.url, timeout=30) as c:
            file_id = c.post("/v1/files", files={"file": ("e.jsonl", jsonl([line]))}, data={"purpose": "batch"})
            body = {"input_file_id": file_id.json()["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
            batch_id = c.post("/v1/batches", json=body).json()["id"]
            batch = wait_for(lambda: (b := c.get(f"/v1/batches/{batch_id}").json())["status"] == "completed" and b)
        assert batch["request_counts"]["completed"] == 1 and mock.stats()["/v1/embeddings"] == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
