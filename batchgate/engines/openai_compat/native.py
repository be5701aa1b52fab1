"""An upstream's own Files + Batches API (OpenAI's shape), for native batch passthrough.

Blocking: it runs inside batch jobs (a child process, off every event loop), one short
aiohttp session per call. Input is spooled to a temporary file and uploaded as a stream;
result files are downloaded to a temporary file and read back line by line, so neither
is ever held whole in memory.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, BinaryIO, TypeVar

import aiohttp
import orjson

from batchgate.core.errors import BackendError, UpstreamTimeoutError, UpstreamUnreachableError
from batchgate.core.ports import UpstreamBatch
from batchgate.core.routing import UpstreamConfig

T = TypeVar("T")
COMPLETION_WINDOW = "24h"


class NativeBatches:
    def __init__(self, config: UpstreamConfig):
        self.config = config
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}

    def submit(self, lines: Iterable[bytes], endpoint: str, metadata: dict[str, str]) -> str:
        with tempfile.TemporaryFile() as spool:
            for line in lines:
                spool.write(line + b"\n")
            spool.seek(0)

            async def upload(session: aiohttp.ClientSession) -> str:
                form = aiohttp.FormData()
                form.add_field("purpose", "batch")
                form.add_field("file", spool, filename="batch.jsonl", content_type="application/jsonl")
                file = await self._json(await session.post(self._url("/files"), data=form))
                body = {
                    "input_file_id": file["id"],
                    "endpoint": endpoint,
                    "completion_window": COMPLETION_WINDOW,
                    "metadata": metadata,
                }
                batch = await self._json(await session.post(self._url("/batches"), json=body))
                return str(batch["id"])

            return self._call(upload)

    def find(self, metadata: dict[str, str]) -> str | None:
        async def recent(session: aiohttp.ClientSession) -> str | None:
            page = await self._json(await session.get(self._url("/batches"), params={"limit": "100"}))
            for batch in page.get("data") or ():
                if batch.get("metadata") == metadata and batch.get("status") not in ("failed", "cancelled", "expired"):
                    return str(batch["id"])
            return None

        return self._call(recent)

    def retrieve(self, batch_id: str) -> UpstreamBatch:
        return self._call(lambda s: self._batch(s.get(self._url(f"/batches/{batch_id}"))))

    def cancel(self, batch_id: str) -> UpstreamBatch:
        return self._call(lambda s: self._batch(s.post(self._url(f"/batches/{batch_id}/cancel"))))

    def download(self, file_id: str) -> Iterator[bytes]:
        with tempfile.TemporaryFile() as spool:

            async def fetch(session: aiohttp.ClientSession) -> None:
                async with session.get(self._url(f"/files/{file_id}/content")) as response:
                    if response.status != 200:
                        await self._json(response)  # raises with the upstream's message
                    async for chunk in response.content.iter_chunked(1 << 20):
                        spool.write(chunk)

            self._call(fetch)
            spool.seek(0)
            yield from _lines(spool)

    # ---- HTTP ---------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.config.base_url + path

    def _call(self, work: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
        async def run() -> T:
            timeout = aiohttp.ClientTimeout(
                sock_connect=self.config.connect_timeout, sock_read=self.config.read_timeout
            )
            async with aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session:
                return await work(session)

        try:
            return asyncio.run(run())
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"Upstream {self.config.name!r}: the request timed out.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachableError(f"Upstream {self.config.name!r}: {type(exc).__name__}: {exc}") from exc

    async def _batch(self, pending: Any) -> UpstreamBatch:
        body = await self._json(await pending)
        counts = body.get("request_counts") or {}
        errors = (body.get("errors") or {}).get("data") or []
        return UpstreamBatch(
            id=body["id"],
            status=body["status"],
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            output_file_id=body.get("output_file_id"),
            error_file_id=body.get("error_file_id"),
            errors=" ".join(str(e.get("message", e)) for e in errors[:5]),
        )

    async def _json(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        async with response:
            raw = await response.read()
            if response.status == 200:
                return dict(orjson.loads(raw))
            raise BackendError(
                f"Upstream {self.config.name!r} answered {response.status} on {response.url.path}: "
                f"{raw[:500].decode(errors='replace')}",
                code="upstream_error",
            )


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        if line.strip():
            yield line.rstrip(b"\r\n")
