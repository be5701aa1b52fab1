"""Agents and swarms in the SDK: `client.agent` and `client.swarm` (the Swarms-compatible API).

    client.agent.completions.create(agent_config={...}, task="...")          # one completion now
    client.agent.batch.completions.create([{agent_config, task}, ...])       # waits; results in order
    client.agent.batch.completions.create(records, wait=False)               # the batch id at once
    client.agent.batch.completions.run_chunks(records, chunk_size=500, manifest="job.json")

A batch is submitted asynchronously (`Prefer: respond-async`) with an `Idempotency-Key`,
then polled: a retried or resent submission never creates a second batch, and waiting
survives dropped connections. Responses are the protocol models of `batchgate.protocol.agents`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from batchgate.protocol.agents import (
    AgentBatchList,
    AgentBatchResponse,
    AgentCompletionResponse,
    SwarmBatchResponse,
    SwarmCompletionResponse,
)
from batchgate.sdk._core import AsyncDriver, Call, Emit, Op, Sleep, SyncDriver, request_json
from batchgate.sdk.errors import JobManifestError, WaitTimeoutError

ENDED = ("completed", "failed", "cancelled", "expired")
B = TypeVar("B", AgentBatchResponse, SwarmBatchResponse)
M = TypeVar("M", bound=BaseModel)
C = TypeVar("C")


class _BatchOps(Generic[B]):
    """The batch calls of one kind (`agent` or `swarm`), written once as effect generators."""

    def __init__(self, kind: str, model: type[B], max_retries: int):
        self.path = f"/v1/{kind}/batch/completions"
        self.model: type[B] = model
        self.max_retries = max_retries

    def submit(self, records: Sequence[dict[str, Any]], key: str) -> Op[str]:
        # Idempotency-Key: the server answers a resent submission with the batch it made
        # first, so even a submission whose answer was lost can be retried safely
        call = Call("POST", self.path, params={"wait": "false"}, json=list(records), headers={"Idempotency-Key": key})
        accepted = yield from request_json(call, self.max_retries)
        return str(accepted["batch_id"])

    def retrieve(self, batch_id: str) -> Op[B]:
        data = yield from request_json(Call("GET", f"{self.path}/{batch_id}"), self.max_retries)
        return self.model.model_validate(data)

    def wait(self, batch_id: str, timeout: float | None, poll_interval: float) -> Op[B]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = yield from self.retrieve(batch_id)
            if batch.status in ENDED:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeoutError(f"Batch {batch_id} is still {batch.status} after {timeout} s.")
            yield Sleep(poll_interval)

    def cancel(self, batch_id: str) -> Op[B]:
        data = yield from request_json(Call("POST", f"{self.path}/{batch_id}/cancel"), self.max_retries)
        return self.model.model_validate(data)

    def create(
        self,
        records: Sequence[dict[str, Any]],
        wait: bool,
        timeout: float | None,
        poll_interval: float,
        key: str | None,
    ) -> Op[B]:
        batch_id = yield from self.submit(records, key or uuid.uuid4().hex)
        if not wait:
            return (yield from self.retrieve(batch_id))
        return (yield from self.wait(batch_id, timeout, poll_interval))

    def run_chunks(
        self, records: Sequence[dict[str, Any]], chunk_size: int, manifest: Path, poll_interval: float
    ) -> Op[None]:
        state = _read_manifest(manifest, len(records), chunk_size)
        chunks = range(0, len(records), chunk_size)
        for index, start in enumerate(chunks):
            if str(index) not in state["chunks"]:
                key = f"{state['job']}-{index}"
                state["chunks"][str(index)] = yield from self.submit(records[start : start + chunk_size], key)
                _write_manifest(manifest, state)
        for index in range(len(chunks)):
            batch = yield from self.wait(state["chunks"][str(index)], None, poll_interval)
            yield Emit((index, batch))


def _complete(max_retries: int, path: str, body: dict[str, Any], model: type[M]) -> Op[M]:
    data = yield from request_json(Call("POST", path, json=body), max_retries)
    return model.model_validate(data)


RUN_CHUNKS_DOC = """Submit `records` in chunks, one batch each, then yield `(chunk_index, batch)` in
chunk order as they end. Each chunk's batch id is written to `manifest` (atomically)
before the next is submitted, and each chunk is sent with an idempotency key derived
from the job, so re-running after a crash (even kill -9) resubmits nothing: recorded
chunks are polled again, and a chunk submitted but not yet recorded is found by its key."""


class BatchCompletions(Generic[B]):
    """`client.agent.batch.completions` / `client.swarm.batch.completions`."""

    def __init__(self, driver: SyncDriver, ops: _BatchOps[B]):
        self._driver = driver
        self._ops: _BatchOps[B] = ops

    def create(
        self,
        records: Sequence[dict[str, Any]],
        *,
        wait: bool = True,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        idempotency_key: str | None = None,
    ) -> B:
        """Submit a batch (≤ 1,000 records by default); with `wait`, poll until it ends and
        return every result in input order, else return its progress at once."""
        return self._driver.run(self._ops.create(records, wait, timeout, poll_interval, idempotency_key))

    def retrieve(self, batch_id: str) -> B:
        return self._driver.run(self._ops.retrieve(batch_id))

    def wait(self, batch_id: str, *, timeout: float | None = None, poll_interval: float = 1.0) -> B:
        return self._driver.run(self._ops.wait(batch_id, timeout, poll_interval))

    def cancel(self, batch_id: str) -> B:
        return self._driver.run(self._ops.cancel(batch_id))

    def run_chunks(
        self,
        records: Sequence[dict[str, Any]],
        *,
        chunk_size: int = 500,
        manifest: str | os.PathLike[str],
        poll_interval: float = 1.0,
    ) -> Iterator[tuple[int, B]]:
        return self._driver.iterate(self._ops.run_chunks(records, chunk_size, Path(manifest), poll_interval))

    run_chunks.__doc__ = RUN_CHUNKS_DOC


class AsyncBatchCompletions(Generic[B]):
    """`BatchCompletions` for `AsyncClient`: the same methods, awaited."""

    def __init__(self, driver: AsyncDriver, ops: _BatchOps[B]):
        self._driver = driver
        self._ops: _BatchOps[B] = ops

    async def create(
        self,
        records: Sequence[dict[str, Any]],
        *,
        wait: bool = True,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        idempotency_key: str | None = None,
    ) -> B:
        return await self._driver.run(self._ops.create(records, wait, timeout, poll_interval, idempotency_key))

    async def retrieve(self, batch_id: str) -> B:
        return await self._driver.run(self._ops.retrieve(batch_id))

    async def wait(self, batch_id: str, *, timeout: float | None = None, poll_interval: float = 1.0) -> B:
        return await self._driver.run(self._ops.wait(batch_id, timeout, poll_interval))

    async def cancel(self, batch_id: str) -> B:
        return await self._driver.run(self._ops.cancel(batch_id))

    def run_chunks(
        self,
        records: Sequence[dict[str, Any]],
        *,
        chunk_size: int = 500,
        manifest: str | os.PathLike[str],
        poll_interval: float = 1.0,
    ) -> AsyncIterator[tuple[int, B]]:
        return self._driver.iterate(self._ops.run_chunks(records, chunk_size, Path(manifest), poll_interval))

    run_chunks.__doc__ = RUN_CHUNKS_DOC


class _Batch(Generic[C]):
    def __init__(self, completions: C):
        self.completions: C = completions


class _Completions:
    def __init__(self, driver: SyncDriver, max_retries: int):
        self._driver, self._max_retries = driver, max_retries


class _AgentCompletions(_Completions):
    def create(self, *, agent_config: dict[str, Any], task: str, **fields: Any) -> AgentCompletionResponse:
        """One agent completion now (`history`, `img`, `imgs`, `tools_enabled` as fields)."""
        body = {"agent_config": agent_config, "task": task, **fields}
        return self._driver.run(_complete(self._max_retries, "/v1/agent/completions", body, AgentCompletionResponse))


class _SwarmCompletions(_Completions):
    def create(
        self, *, agents: Sequence[dict[str, Any]], task: str, swarm_type: str, **fields: Any
    ) -> SwarmCompletionResponse:
        """One swarm now (`name`, `description`, `rules` as fields)."""
        body = {"agents": list(agents), "task": task, "swarm_type": swarm_type, **fields}
        return self._driver.run(_complete(self._max_retries, "/v1/swarm/completions", body, SwarmCompletionResponse))


class _AsyncCompletions:
    def __init__(self, driver: AsyncDriver, max_retries: int):
        self._driver, self._max_retries = driver, max_retries


class _AsyncAgentCompletions(_AsyncCompletions):
    async def create(self, *, agent_config: dict[str, Any], task: str, **fields: Any) -> AgentCompletionResponse:
        body = {"agent_config": agent_config, "task": task, **fields}
        return await self._driver.run(
            _complete(self._max_retries, "/v1/agent/completions", body, AgentCompletionResponse)
        )


class _AsyncSwarmCompletions(_AsyncCompletions):
    async def create(
        self, *, agents: Sequence[dict[str, Any]], task: str, swarm_type: str, **fields: Any
    ) -> SwarmCompletionResponse:
        body = {"agents": list(agents), "task": task, "swarm_type": swarm_type, **fields}
        return await self._driver.run(
            _complete(self._max_retries, "/v1/swarm/completions", body, SwarmCompletionResponse)
        )


def _list_batches(max_retries: int, after: str | None, limit: int) -> Op[AgentBatchList]:
    params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
    data = yield from request_json(Call("GET", "/v1/agent/batch/completions", params=params), max_retries)
    return AgentBatchList.model_validate(data)


class Agent:
    """`client.agent`: `.completions` (one now) and `.batch.completions` (durable batches)."""

    def __init__(self, driver: SyncDriver, max_retries: int):
        self._driver, self._max_retries = driver, max_retries
        self.completions = _AgentCompletions(driver, max_retries)
        self.batch = _Batch(BatchCompletions(driver, _BatchOps("agent", AgentBatchResponse, max_retries)))

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> AgentBatchList:
        return self._driver.run(_list_batches(self._max_retries, after, limit))


class Swarm:
    """`client.swarm`: `.completions` (one swarm now) and `.batch.completions`."""

    def __init__(self, driver: SyncDriver, max_retries: int):
        self.completions = _SwarmCompletions(driver, max_retries)
        self.batch = _Batch(BatchCompletions(driver, _BatchOps("swarm", SwarmBatchResponse, max_retries)))


class AsyncAgent:
    """`Agent` for `AsyncClient`."""

    def __init__(self, driver: AsyncDriver, max_retries: int):
        self._driver, self._max_retries = driver, max_retries
        self.completions = _AsyncAgentCompletions(driver, max_retries)
        self.batch = _Batch(AsyncBatchCompletions(driver, _BatchOps("agent", AgentBatchResponse, max_retries)))

    async def list_batches(self, *, after: str | None = None, limit: int = 20) -> AgentBatchList:
        return await self._driver.run(_list_batches(self._max_retries, after, limit))


class AsyncSwarm:
    """`Swarm` for `AsyncClient`."""

    def __init__(self, driver: AsyncDriver, max_retries: int):
        self.completions = _AsyncSwarmCompletions(driver, max_retries)
        self.batch = _Batch(AsyncBatchCompletions(driver, _BatchOps("swarm", SwarmBatchResponse, max_retries)))


def _read_manifest(path: Path, total: int, chunk_size: int) -> dict[str, Any]:
    if not path.exists():
        return {"version": 1, "job": uuid.uuid4().hex, "records": total, "chunk_size": chunk_size, "chunks": {}}
    state = json.loads(path.read_text())
    if state.get("records") != total or state.get("chunk_size") != chunk_size:
        raise JobManifestError(
            f"{path} is the manifest of another job ({state.get('records')} records in chunks of "
            f"{state.get('chunk_size')}); use a new manifest path."
        )
    return state


def _write_manifest(path: Path, state: dict[str, Any]) -> None:
    """Written to a temporary file, fsynced and renamed: the manifest on disk is always whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
