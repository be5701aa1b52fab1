"""Scheduling in the SDK: `client.scheduling` (`/v1/admin/scheduling`, an extension; admin keys).

    client.scheduling.show()                 # each upstream's adaptive concurrency, every project's weight
    client.scheduling.set_weight("team", 3)  # the project's share of batch capacity (default 1)

Objects are the server's JSON dicts (see `batchgate.protocol.scheduling`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from batchgate.sdk._core import AsyncDriver, Call, Op, SyncDriver, request_json


class _SchedulingOps:
    def __init__(self, max_retries: int):
        self.max_retries = max_retries

    def show(self) -> Op[dict[str, Any]]:
        return (yield from request_json(Call("GET", "/v1/admin/scheduling"), self.max_retries))

    def set_weight(self, project: str, weight: float) -> Op[dict[str, Any]]:
        # setting a value twice leaves it as once: safe to retry
        call = Call("POST", f"/v1/admin/projects/{quote(project, safe='')}/weight", json={"weight": weight})
        return (yield from request_json(call, self.max_retries))


class Scheduling:
    """How batch capacity is shared: upstreams' concurrency now, projects' weights."""

    def __init__(self, driver: SyncDriver, max_retries: int):
        self._driver, self._ops = driver, _SchedulingOps(max_retries)

    def show(self) -> dict[str, Any]:
        return self._driver.run(self._ops.show())

    def set_weight(self, project: str, weight: float) -> dict[str, Any]:
        """Set a project's weight (by name or id); the answer is `show()`'s after the change."""
        return self._driver.run(self._ops.set_weight(project, weight))


class AsyncScheduling:
    """See `Scheduling`."""

    def __init__(self, driver: AsyncDriver, max_retries: int):
        self._driver, self._ops = driver, _SchedulingOps(max_retries)

    async def show(self) -> dict[str, Any]:
        return await self._driver.run(self._ops.show())

    async def set_weight(self, project: str, weight: float) -> dict[str, Any]:
        return await self._driver.run(self._ops.set_weight(project, weight))
