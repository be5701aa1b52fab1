"""The HTTP side of webhook delivery (core/webhooks.py's `WebhookSender`): one POST per
attempt over a pooled httpx client, redirects not followed, a bounded wait."""

from __future__ import annotations

import httpx

from batchgate import __version__


class HttpWebhookSender:
    def __init__(self, timeout: float = 15.0):
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None  # made on the loop that posts

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                headers={"user-agent": f"batchgate-webhooks/{__version__}"},
            )
        response = await self._client.post(url, content=body, headers=headers)
        return response.status_code

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
