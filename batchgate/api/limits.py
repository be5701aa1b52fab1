"""Request bodies: authenticated before a byte of them is read, and bounded.

FastAPI reads (and parses) a route's body before it resolves the route's dependencies,
so the API key dependency alone would let an anonymous client make the server read and
parse any body it likes. `BodyGate` sits in front of the routes as pure ASGI middleware:

- a request that carries a body is authenticated from its headers first (401, nothing
  read); the key is left in the request state for `deps.project_id`;
- a JSON body is refused with 413 when its Content-Length is over the limit, or, for a
  chunked body, as soon as the bytes received pass it; otherwise it is handed on whole
  (the route would hold it all to parse it anyway);
- the multipart upload routes stream as they are: `api.uploads` writes them to disk
  chunk by chunk and enforces the file size limit as they arrive.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from batchgate.api.deps import credentials
from batchgate.api.errors import to_response
from batchgate.core.errors import BatchgateError, PayloadTooLargeError

# routes whose body is a multipart upload, streamed to disk under the file size limit
STREAMED_UPLOADS = frozenset({"/v1/files", "/api/files"})
# the routes whose JSON body may hold a whole batch of records (`items`, agent records)
BATCH_JSON_ROUTES = frozenset({"/api/batches", "/v1/agent/batch/completions", "/v1/swarm/batch/completions"})
# the console gates its own bodies (its session cookie, CSRF, size), before reading them: console/gate.py
CONSOLE_PREFIX = "/console/"


class BodyGate:
    """Pure ASGI middleware: authenticate, then bound, every request body."""

    def __init__(self, app: Any, services: Any):
        self.app = app
        self.services = services

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (declared is not None and declared != "0")
        if not has_body or scope["path"].startswith(CONSOLE_PREFIX):
            await self.app(scope, receive, send)
            return
        settings = self.services.settings
        try:
            if not settings.insecure_no_auth:
                key = await run_in_threadpool(self.services.keys.authenticate, credentials(headers))
                scope.setdefault("state", {})["api_key"] = key
            if scope["path"] in STREAMED_UPLOADS:
                await self.app(scope, receive, send)
                return
            limit = settings.max_batch_json_bytes if scope["path"] in BATCH_JSON_ROUTES else settings.max_json_bytes
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            body = await _read_body(receive, limit)
        except BatchgateError as exc:
            # close the connection after answering: the rest of the body is never read
            await to_response(exc, headers={"Connection": "close"})(scope, receive, send)
            return
        if body is None:
            return  # the client went away mid-body: nobody to answer
        await self.app(scope, _replay(body, receive), send)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is larger than the limit of {limit} bytes.", code="request_too_large"
    )


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole body, or PayloadTooLargeError as soon as it passes `limit` (None if the
    client disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A `receive` that gives the app the body already read, then the connection's own
    messages (a disconnect, for streaming responses that watch for one)."""
    delivered = False

    async def replay() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
