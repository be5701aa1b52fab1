"""The SDK's exceptions: one class per HTTP status family, all under `BatchgateError`.

Every error the server sends has OpenAI's shape `{"error": {"message", "type", "param",
"code"}}` and an `x-request-id` header; both travel on the exception so a failure can be
matched with the server's log line.
"""

from __future__ import annotations

from typing import Any

import httpx


class BatchgateError(Exception):
    """Base of every SDK error.

    `status_code` is the HTTP status (None when no response came back), `code` and `param`
    are the server's error code and offending parameter, `request_id` the server's
    `x-request-id` for the failed request.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.status_code = status_code
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        details = [
            f"{k}={v}" for k, v in (("status", self.status_code), ("code", self.code), ("param", self.param)) if v
        ]
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(details)})" if details else self.message


class BadRequestError(BatchgateError):
    """400 or 422: an invalid parameter or a body of the wrong shape."""


class AuthenticationError(BatchgateError):
    """401 or 403: a missing, unknown or revoked API key."""


class NotFoundError(BatchgateError):
    """404: no such object in this key's project."""


class ConflictError(BatchgateError):
    """409: the object's state does not allow it (e.g. output of a batch still running)."""


class PayloadTooLargeError(BatchgateError):
    """413: too many items for a synchronous call, or an upload over the size limit."""


class RateLimitError(BatchgateError):
    """429: too many requests (retried first, honouring `Retry-After`)."""


class ServerError(BatchgateError):
    """5xx: the server or its backend failed (retried first)."""


class APIConnectionError(BatchgateError):
    """No response: the connection failed, was reset or timed out (retried first)."""


class ConfigurationError(BatchgateError):
    """A profile or setting the client was told to use is missing or malformed."""


class WaitTimeoutError(BatchgateError, TimeoutError):
    """`wait` gave up before the batch ended; the batch itself keeps running."""


class JobManifestError(BatchgateError):
    """A chunked job's manifest belongs to other inputs or parameters, or is unreadable."""


_BY_STATUS: dict[int, type[BatchgateError]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}


def error_from_response(response: httpx.Response) -> BatchgateError:
    """The exception for a non-2xx response (whose body has been read)."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else BatchgateError)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or f"HTTP {status}")
        code, param = error.get("code"), error.get("param")
    else:
        message = f"HTTP {status}: {str(body)[:500]}" if body else f"HTTP {status}"
        code = param = None
    return cls(
        message,
        code=str(code) if code is not None else None,
        param=str(param) if param is not None else None,
        status_code=status,
        request_id=response.headers.get("x-request-id"),
        body=body,
    )
