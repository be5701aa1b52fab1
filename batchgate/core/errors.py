"""The one exception tree of batchgate.

Every error batchgate raises derives from `BatchgateError` and carries, once, what a
client is told about it: the HTTP `status` and the fields of OpenAI's error body
(`message`, `type`, `param`, `code`). `api/errors.py` turns any of them into a response
in one place; nothing else maps errors to statuses.

Backends raise `BackendError` when a request got no usable answer (its `transient` flag
tells the worker whether another attempt may help) and `BackendRejectedError` when the
backend answered with an error: that answer is kept whole, because a batch line records
it verbatim in the error file, while a synchronous caller gets it as an API error with
an upstream's 429 kept a 429 and its 5xx turned into a 502.
"""

from __future__ import annotations

from typing import Any

from batchgate.core.ports import BackendResponse
from batchgate.protocol.errors import ErrorBody, ErrorDetail


class BatchgateError(Exception):
    """Base class: an unexpected server-side failure unless a subclass says otherwise."""

    status = 500
    type = "server_error"
    default_code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after  # seconds a client should wait before trying again

    def body(self) -> dict[str, Any]:
        """The OpenAI error body a client receives."""
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorBody(error=detail).model_dump()


class InvalidRequestError(BatchgateError):
    """The request is malformed or names an invalid value."""

    status = 400
    type = "invalid_request_error"
    default_code = None


class AuthenticationError(BatchgateError):
    """Missing, unknown or revoked API key."""

    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(BatchgateError):
    """The key may not do this: a scope it lacks, or a model it is not allowed."""

    status = 403
    type = "invalid_request_error"
    default_code = "insufficient_permissions"


class NotFoundError(BatchgateError):
    """The object does not exist, or belongs to another project."""

    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ConflictError(BatchgateError):
    """The object's current state forbids the operation."""

    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class JobLostError(ConflictError):
    """A batch job's worker no longer owns the job (it was presumed dead and the job was
    handed to another worker): the job stops without writing anything more."""

    default_code = "job_lost"


class PayloadTooLargeError(BatchgateError):
    """An upload or body exceeds a configured limit."""

    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class InsufficientStorageError(BatchgateError):
    """The data dir's disk is full (ENOSPC, SQLite's "database or disk is full"): nothing
    was written, and the same request may succeed once space is freed."""

    status = 507
    type = "server_error"
    default_code = "insufficient_storage"


class RateLimitError(BatchgateError):
    """A key's rate limit or parallel-request cap refused a request (core/ratelimit.py):
    OpenAI's 429 `rate_limit_exceeded`, typed `requests` or `tokens` as OpenAI types it,
    with Retry-After when waiting helps."""

    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None, tokens: bool = False):
        super().__init__(message, retry_after=retry_after)
        self.type = "tokens" if tokens else "requests"


class QuotaExceededError(BatchgateError):
    """The key has spent its budget for the period (core/budgets.py): OpenAI's 429
    `insufficient_quota`, with Retry-After until the period renews (none for a total)."""

    status = 429
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class BackendError(BatchgateError):
    """A backend produced no usable answer to one request.

    `transient` errors (timeouts, 429, 5xx, dropped connections) are retried by the
    worker up to its attempt limit; the others fail the line at once.
    """

    status = 502
    type = "server_error"
    default_code = "backend_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(message, param=param, code=code, retry_after=retry_after)
        self.transient = transient


class UpstreamUnreachableError(BackendError):
    """No answer from an upstream server: the connection failed or broke off."""

    status = 503
    default_code = "upstream_unreachable"


class UpstreamTimeoutError(BackendError):
    """An upstream server did not answer in time."""

    status = 504
    default_code = "upstream_timeout"


_GATEWAY_CREDENTIALS = frozenset({401, 403, 407})  # statuses about the gateway's key, not the caller's


class BackendRejectedError(BackendError):
    """A backend answered with an error: `response` is that answer (its status and OpenAI
    error body), recorded whole as a batch line's response.

    A synchronous caller gets it as an API error: a 4xx keeps its status and the
    backend's message, type, param and code (a 429 keeps its Retry-After), for it is
    about the caller's request. A 5xx becomes a 502 `upstream_error`, and so does a
    refusal of the gateway's own credentials (401, 403, 407), which the caller cannot
    fix: the server at fault is not this one. An upstream's 408 is a 504. Not transient:
    backends retry 429 and 5xx themselves before they give up.
    """

    def __init__(self, response: BackendResponse, *, retry_after: float | None = None):
        detail = response.body.get("error") if isinstance(response.body, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        message = str(detail.get("message") or f"The backend answered HTTP {response.status_code}.")
        param, code = detail.get("param"), detail.get("code")
        if response.status_code == 408:
            self.status, self.type = 504, "server_error"
            super().__init__(message, code="upstream_timeout", retry_after=retry_after)
        elif 400 <= response.status_code < 500 and response.status_code not in _GATEWAY_CREDENTIALS:
            self.status = response.status_code
            self.type = str(detail.get("type") or "invalid_request_error")
            super().__init__(message, param=param if isinstance(param, str) else None, retry_after=retry_after)
            # a 4xx without a code keeps it null, as the upstream sent it (a 429 gets OpenAI's)
            self.code = code if isinstance(code, str) else "rate_limit_exceeded" if self.status == 429 else None
        else:
            super().__init__(
                f"The upstream answered HTTP {response.status_code}: {message}",
                code="upstream_error",
                retry_after=retry_after,
            )
        self.response = response
