"""The fault proxy itself: retry tests are only as good as the faults it really puts on the wire."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web
from upstreams import CUSTOM_ID_HEADER, BackgroundApp, FaultProxy, Faults


class EchoUpstream(BackgroundApp):
    """Answers every request with a JSON description of it, and counts what reached it."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._echo)
        super().__init__(app)
        self.hits = 0

    async def _echo(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body.decode(),
            },
            headers={"X-Upstream": "echo"},
        )


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as server:
        yield server


@pytest.fixture
def proxy(upstream: EchoUpstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url, seed=1) as p:
        yield p


def post(proxy: FaultProxy, custom_id: str | None = "req-1", timeout: float = 5.0) -> httpx.Response:
    headers = {CUSTOM_ID_HEADER: custom_id} if custom_id else {}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def test_pass_through_mirrors_the_request_and_the_response(proxy: FaultProxy, upstream: EchoUpstream) -> None:
    body = b'{"model": "m", "messages": []}'
    r = httpx.post(
        proxy.url + "/v1/chat/completions?api-version=1",
        content=body,
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json", "Keep-Alive": "timeout=5"},
    )
    assert r.status_code == 200
    assert r.headers["X-Upstream"] == "echo"
    seen = r.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/v1/chat/completions", "api-version=1")
    assert seen["body"] == body.decode()
    assert seen["headers"]["authorization"] == "Bearer sk-test"
    assert "keep-alive" not in seen["headers"]  # hop-by-hop: for the proxy's connection only
    assert seen["headers"]["host"] != f"127.0.0.1:{proxy.port}"

    assert httpx.get(proxy.url + "/v1/models").json()["method"] == "GET"
    [first, second] = proxy.records
    assert (first.path, first.key, first.fault, first.status) == (
        "/v1/chat/completions",
        hashlib.sha256(body).hexdigest(),  # no custom-id header: the body identifies the request
        None,
        200,
    )
    assert (second.method, second.key, second.status) == ("GET", hashlib.sha256(b"").hexdigest(), 200)


def test_429_has_retry_after_and_an_openai_error_body(proxy: FaultProxy, upstream: EchoUpstream) -> None:
    hits = upstream.hits
    proxy.faults = Faults.always("429", retry_after="7")
    r = post(proxy)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    proxy.faults = Faults.always("429", retry_after=None)
    assert "Retry-After" not in post(proxy).headers
    assert upstream.hits == hits  # a rejected request never reaches the upstream
    assert [(r.fault, r.status) for r in proxy.records] == [("429", 429), ("429", 429)]


@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_errors(proxy: FaultProxy, kind: str) -> None:
    proxy.faults = Faults.always(kind)
    r = post(proxy)
    assert r.status_code == int(kind)
    assert r.json()["error"]["type"] == "server_error"
    assert proxy.count(fault=kind) == 1


def test_slow_times_the_client_out_then_answers_a_patient_one(proxy: FaultProxy) -> None:
    proxy.faults = Faults.always("slow", slow_seconds=0.4)
    with pytest.raises(httpx.ReadTimeout):
        post(proxy, "impatient", timeout=0.1)
    start = time.monotonic()
    assert post(proxy, "patient", timeout=5).status_code == 200
    assert time.monotonic() - start >= 0.4
    assert proxy.attempts_by_key() == {"impatient": 1, "patient": 1}


def test_stopping_does_not_wait_for_slow_requests(upstream: EchoUpstream) -> None:
    proxy = FaultProxy(upstream.url, Faults.always("slow", slow_seconds=30)).start()
    with pytest.raises(httpx.ReadTimeout):
        post(proxy, timeout=0.2)
    start = time.monotonic()
    proxy.stop()
    assert time.monotonic() - start < 3


def test_reset_aborts_the_connection_without_a_response(proxy: FaultProxy, upstream: EchoUpstream) -> None:
    hits = upstream.hits
    proxy.faults = Faults.always("reset")
    with pytest.raises(httpx.ReadError, match="reset"):  # ECONNRESET: the proxy sends a TCP RST
        post(proxy)
    assert upstream.hits == hits
    [record] = proxy.records
    assert (record.fault, record.status) == ("reset", None)


def test_truncated_body_is_a_protocol_error(proxy: FaultProxy, upstream: EchoUpstream) -> None:
    hits = upstream.hits
    proxy.faults = Faults.always("truncated")
    with pytest.raises(httpx.RemoteProtocolError):
        post(proxy)
    assert upstream.hits == hits + 1  # the upstream did the work; only its answer was lost
    # headers arrive whole, so a streaming client sees a 200 before the body breaks
    with httpx.stream("POST", proxy.url + "/v1/x", content=b"{}", timeout=5) as r:
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) > 0
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()
    assert proxy.count(fault="truncated") == 2


def test_faults_change_at_runtime(proxy: FaultProxy) -> None:
    proxy.faults = Faults.always("500")
    assert post(proxy).status_code == 500
    proxy.faults = Faults()
    assert post(proxy).status_code == 200
    assert proxy.attempts_by_key() == {"req-1": 2}
    assert [r.attempt for r in proxy.records] == [1, 2]
    assert (proxy.count(), proxy.count(fault=None), proxy.count(fault="500")) == (2, 1, 1)


def test_mixed_rates_are_reproducible_per_seed_and_counted_by_key(upstream: EchoUpstream) -> None:
    faults = Faults(rate_429=0.3, rate_500=0.2, rate_503=0.2)

    def run() -> list[tuple[str, int, str | None, int | None]]:
        with FaultProxy(upstream.url, faults, seed=7) as proxy:
            for _round in range(2):
                for i in range(15):
                    r = post(proxy, f"req-{i}")
                    assert r.status_code == (proxy.records[-1].status or 0)
            assert proxy.attempts_by_key() == {f"req-{i}": 2 for i in range(15)}
            kinds = {kind: proxy.count(fault=kind) for kind in ("429", "500", "503", None)}
            assert all(kinds.values()), kinds  # 30 draws at these rates: every outcome shows up
            assert sum(kinds.values()) == proxy.count() == 30
            assert proxy.count(key="req-3") == 2
            return [(r.key, r.attempt, r.fault, r.status) for r in proxy.records]

    assert run() == run()


def test_max_per_key_guarantees_eventual_success(proxy: FaultProxy) -> None:
    proxy.faults = Faults(rate_503=1.0, max_per_key=2)
    assert [post(proxy, key).status_code for key in ("a", "a", "a", "b")] == [503, 503, 200, 503]
    assert proxy.attempts_by_key() == {"a": 3, "b": 1}


def test_paths_limit_where_faults_apply(proxy: FaultProxy) -> None:
    proxy.faults = Faults(rate_500=1.0, paths=("/v1/chat/",))
    assert post(proxy).status_code == 500
    assert httpx.get(proxy.url + "/v1/models").status_code == 200


def test_an_unreachable_upstream_is_a_502() -> None:
    with FaultProxy("http://127.0.0.1:9") as proxy:  # discard port: nothing listens
        r = httpx.get(proxy.url + "/v1/models")
    assert r.status_code == 502
    assert "could not reach" in json.loads(r.content)["error"]["message"]


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="sum"):
        Faults(rate_429=0.6, rate_500=0.5)
    with pytest.raises(ValueError, match="within"):
        Faults(rate_slow=-0.1)
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.always("teapot")
