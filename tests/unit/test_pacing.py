"""Batch pacing on the worker (core/pacing.py), on the fakes: a batch's lines wait for the
rate limits of the key that created it instead of failing, and only a line that cannot
run before its batch expires ends with `rate_limited`. Time is a FakeClock: a wait of an
hour costs the test nothing. On the in-memory store and PostgreSQL (the limiter's SQL;
SQLite runs the same SQL in the contract suite and the real-server tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from support import chat_line
from unit.test_lifecycle import STORES, Harness

from batchgate.app import build_services
from batchgate.core import pacing
from batchgate.core.metering import Caller, current_caller
from batchgate.core.models import ApiKey, BatchRecord, BatchStatus, RateLimit
from batchgate.core.pacing import BatchPacer
from batchgate.core.ports import BackendRequest, BackendResponse, Store
from batchgate.settings import Settings
from batchgate.testing import FakeClock, MemoryBlobStore, ScriptedBackend


@pytest.fixture(params=sorted(STORES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    settings = Settings(home=tmp_path, backend="scripted", insecure_no_auth=True, settle_grace=0.3)
    clock = FakeClock()
    services = build_services(settings, STORES[request.param](), MemoryBlobStore(), clock=clock)
    yield Harness(services, clock)
    services.close()


def submit_as(harness: Harness, key_id: str, rows: list) -> str:
    token = current_caller.set(Caller(key_id, harness.project))
    try:
        return harness.submit(rows)
    finally:
        current_caller.reset(token)


def limited_key(harness: Harness, *limits: RateLimit, parallel: int | None = None) -> str:
    key, _ = harness.services.keys.create("default", limits=limits, max_parallel_requests=parallel)
    return key.id


def test_lines_wait_for_the_window_and_none_fails(harness: Harness) -> None:
    key_id = limited_key(harness, RateLimit("requests", 2, 60))  # one more every 30 s
    started = harness.clock.time()
    batch = harness.run_to_end(submit_as(harness, key_id, [chat_line(f"r{i}") for i in range(6)]))
    assert batch.status == BatchStatus.COMPLETED and (batch.completed, batch.failed) == (6, 0)
    waited = harness.clock.time() - started
    assert 4 * 30 <= waited < 4 * 30 + 5, "2 at once, then one every 30 s of the (fake) clock"
    notes = harness.services.store.batch_pacing([batch.id])
    assert "requests=2/1m" in notes[batch.id][1], "the batch recorded why it was slow"


def test_a_line_that_cannot_run_before_the_batch_expires_ends_rate_limited(harness: Harness) -> None:
    key_id = limited_key(harness, RateLimit("requests", 1, 2 * 86400))  # the next one in 2 days
    batch = harness.run_to_end(submit_as(harness, key_id, [chat_line(f"r{i}") for i in range(3)]))
    out, err = harness.assert_exactly_once(batch, ["r0", "r1", "r2"])
    assert len(out) == 1 and [e["error"]["code"] for e in err] == ["rate_limited", "rate_limited"]
    assert "expires before" in err[0]["error"]["message"]


def test_a_line_over_a_token_limit_on_its_own_fails_at_once(harness: Harness) -> None:
    key_id = limited_key(harness, RateLimit("input_tokens", 5, 60))
    batch = harness.run_to_end(submit_as(harness, key_id, [chat_line("big", "word " * 40), chat_line("ok", "hi")]))
    out, err = harness.assert_exactly_once(batch, ["big", "ok"])
    assert [o["custom_id"] for o in out] == ["ok"] and err[0]["error"]["code"] == "rate_limited"


def test_max_parallel_requests_holds_for_batch_lines(harness: Harness) -> None:
    key_id = limited_key(harness, parallel=2)
    running, most = 0, 0

    async def slow(request: BackendRequest) -> BackendResponse:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return await ScriptedBackend().execute(request)

    harness.worker.backend.execute = slow  # type: ignore[method-assign]
    batch = harness.run_to_end(submit_as(harness, key_id, [chat_line(f"r{i}") for i in range(12)]))
    assert (batch.completed, batch.failed) == (12, 0) and most == 2


def test_a_key_without_limits_is_not_paced(harness: Harness) -> None:
    key_id = limited_key(harness)
    started = harness.clock.time()
    batch = harness.run_to_end(submit_as(harness, key_id, [chat_line(f"r{i}") for i in range(50)]))
    assert batch.completed == 50 and harness.clock.time() - started < 5
    assert harness.services.store.batch_pacing([batch.id]) == {}


class CountingReads:
    """The two store reads the pacer makes for a batch's key, counted; the key can change."""

    def __init__(self) -> None:
        self.reads = 0
        self.profile = "first"

    def get_batch(self, batch_id: str, project_id: str | None) -> BatchRecord:
        self.reads += 1
        return BatchRecord(
            batch_id, "p", "/v1/chat/completions", "f", "24h", BatchStatus.IN_PROGRESS, 0, 99, key_id="k"
        )

    def get_api_key(self, key_id: str) -> ApiKey:
        return ApiKey(key_id, "p", "key", "sk-", 0, routing_profile=self.profile)


def test_a_batchs_key_is_read_once_for_its_lines_and_again_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = CountingReads()

    async def db(call: Callable[..., Any], *args: Any) -> Any:
        await asyncio.sleep(0.01)  # a store call takes a while: lines ask meanwhile
        return call(*args)

    pacer = BatchPacer(cast(Store, reads), FakeClock(), db)

    async def scenario() -> None:
        profiles = await asyncio.gather(*(pacer.routing_profile("b") for _ in range(200)))
        assert profiles == ["first"] * 200 and reads.reads == 1, "one read for all the lines asking together"
        reads.profile = "second"
        assert await pacer.routing_profile("b") == "first", "cached"
        monkeypatch.setattr(pacing, "KEY_TTL", 0.05)
        await asyncio.sleep(0.06)
        stale = await asyncio.gather(*(pacer.routing_profile("b") for _ in range(50)))
        assert stale == ["first"] * 50, "past its time the cached key still answers at once, while it is read again"
        monkeypatch.setattr(pacing, "KEY_TTL", 60.0)  # no further re-read from here
        for _ in range(500):  # until the background read (two store calls) is in
            if await pacer.routing_profile("b") == "second":
                break
            await asyncio.sleep(0.01)
        assert await pacer.routing_profile("b") == "second" and reads.reads == 2, "read again once"

    asyncio.run(scenario())


def test_a_line_cancelled_while_its_batchs_key_is_read_does_not_fail_the_others() -> None:
    reads = CountingReads()

    async def db(call: Callable[..., Any], *args: Any) -> Any:
        await asyncio.sleep(0.01)
        return call(*args)

    pacer = BatchPacer(cast(Store, reads), FakeClock(), db)

    async def scenario() -> None:
        first, second = (asyncio.ensure_future(pacer.routing_profile("b")) for _ in range(2))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == "first" and reads.reads == 1

    asyncio.run(scenario())
