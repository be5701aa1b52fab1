"""The HTTP server: uvicorn on its httptools protocol, with the request head bounded.

uvicorn buffers a request's head (request line and headers) until it is complete, with
no limit on its size and no limit on how long it may take to arrive: one connection
sending a 100 MB header, or a byte every few seconds, holds memory or a connection for
as long as it likes. `BoundedHttpToolsProtocol` answers 431 once the head passes
`max_header_bytes`, and 408 when it is not complete within `header_timeout` seconds of
the connection opening (or of the first byte of a later request on a kept-alive
connection); both then close the connection. Bodies are bounded elsewhere: JSON bodies
by `api.limits.BodyGate`, uploads while they stream (`api.uploads`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from batchgate.protocol.errors import ErrorBody, ErrorDetail
from batchgate.settings import Settings


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size and a time limit on each request head."""

    max_header_bytes = 64 * 1024
    header_timeout = 5.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._reading_head = True  # a new connection owes us a request head, from now
        self._head_deadline: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_head and not self.transport.is_closing():
            # the parser keeps an incomplete head in memory: count what it holds. A chunk
            # that also starts the head of a pipelined request counts whole; a slight
            # over-count, by at most one read, on requests that are being pipelined anyway.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, f"The request headers are larger than {self.max_header_bytes} bytes.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0
        if self._head_deadline is None:  # a later request on a kept-alive connection
            self._head_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_deadline()
        super().on_headers_complete()

    def _too_slow(self) -> None:
        self._head_deadline = None
        if self._reading_head and not self.transport.is_closing():
            self._refuse(408, f"The request headers did not arrive within {self.header_timeout:g} seconds.")

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer with an OpenAI error body and close: the rest of the head is never read."""
        code = "request_header_too_large" if status == 431 else "request_timeout"
        detail = ErrorDetail(message=message, type="invalid_request_error", code=code)
        body = ErrorBody(error=detail).model_dump_json().encode()
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self.transport.write(STATUS_LINE[status] + head + body)
        self.transport.close()
        self._reading_head = False
        self._cancel_deadline()


def bounded_protocol(max_header_bytes: int, header_timeout: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with these limits (uvicorn instantiates it per connection)."""
    limits: dict[str, Any] = {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout}
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), limits)


def serve(app: Any, settings: Settings, log_level: str) -> None:
    """Run `app` until SIGTERM/SIGINT, with request heads bounded as configured."""
    protocol = bounded_protocol(settings.max_header_bytes, settings.header_timeout)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False, http=protocol)
