"""Webhook endpoints in the SDK: `client.webhooks` (`/v1/webhooks`, an extension).

    hook = client.webhooks.create("https://example.com/hooks", events=["batch.completed"])
    hook["secret"]                    # whsec_…: shown this once; verify deliveries with it
    client.webhooks.deliveries(hook["id"])   # each delivery with its attempts

Objects are the server's JSON dicts (see `batchgate.protocol.webhooks`)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from batchgate.sdk._core import AsyncDriver, Call, Op, SyncDriver, request_json


class _WebhookOps:
    def __init__(self, max_retries: int):
        self.max_retries = max_retries

    def _json(self, call: Call) -> Op[Any]:
        return request_json(call, self.max_retries)

    def create(self, url: str, events: Sequence[str] | None, description: str | None) -> Op[dict[str, Any]]:
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        if description is not None:
            body["description"] = description
        return (yield from self._json(Call("POST", "/v1/webhooks", json=body, idempotent=False)))

    def list(self) -> Op[list[dict[str, Any]]]:
        data = yield from self._json(Call("GET", "/v1/webhooks"))
        return list(data["data"])

    def retrieve(self, webhook_id: str) -> Op[dict[str, Any]]:
        return (yield from self._json(Call("GET", f"/v1/webhooks/{quote(webhook_id, safe='')}")))

    def delete(self, webhook_id: str) -> Op[dict[str, Any]]:
        return (yield from self._json(Call("DELETE", f"/v1/webhooks/{quote(webhook_id, safe='')}")))

    def deliveries(self, webhook_id: str, limit: int) -> Op[builtins.list[dict[str, Any]]]:
        call = Call("GET", f"/v1/webhooks/{quote(webhook_id, safe='')}/deliveries", params={"limit": limit})
        data = yield from self._json(call)
        return list(data["data"])


class Webhooks:
    """The project's webhook endpoints, told when a batch ends (completed, failed, expired, cancelled)."""

    def __init__(self, driver: SyncDriver, max_retries: int):
        self._driver, self._ops = driver, _WebhookOps(max_retries)

    def create(self, url: str, events: Sequence[str] | None = None, description: str | None = None) -> dict[str, Any]:
        """A new endpoint; its `secret` (whsec_…) is in this answer only."""
        return self._driver.run(self._ops.create(url, events, description))

    def list(self) -> builtins.list[dict[str, Any]]:
        return self._driver.run(self._ops.list())

    def retrieve(self, webhook_id: str) -> dict[str, Any]:
        return self._driver.run(self._ops.retrieve(webhook_id))

    def delete(self, webhook_id: str) -> dict[str, Any]:
        return self._driver.run(self._ops.delete(webhook_id))

    def deliveries(self, webhook_id: str, limit: int = 20) -> builtins.list[dict[str, Any]]:
        """The endpoint's deliveries, newest first, each with its `attempt_log`."""
        return self._driver.run(self._ops.deliveries(webhook_id, limit))


class AsyncWebhooks:
    """See `Webhooks`."""

    def __init__(self, driver: AsyncDriver, max_retries: int):
        self._driver, self._ops = driver, _WebhookOps(max_retries)

    async def create(
        self, url: str, events: Sequence[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        return await self._driver.run(self._ops.create(url, events, description))

    async def list(self) -> builtins.list[dict[str, Any]]:
        return await self._driver.run(self._ops.list())

    async def retrieve(self, webhook_id: str) -> dict[str, Any]:
        return await self._driver.run(self._ops.retrieve(webhook_id))

    async def delete(self, webhook_id: str) -> dict[str, Any]:
        return await self._driver.run(self._ops.delete(webhook_id))

    async def deliveries(self, webhook_id: str, limit: int = 20) -> builtins.list[dict[str, Any]]:
        return await self._driver.run(self._ops.deliveries(webhook_id, limit))
