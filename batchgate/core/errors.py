"""The one exception tree of batchgate.

Core raises these; only `api/` maps them to HTTP statuses (see `api/errors.py`).
Each error carries the fields of the OpenAI error body: message, type, param, code.
"""

from __future__ import annotations


class BatchgateError(Exception):
    """Base class. `type` and `code` follow the OpenAI error body conventions."""

    type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code


class InvalidRequestError(BatchgateError):
    """The request is malformed or names an invalid value (HTTP 400)."""

    type = "invalid_request_error"


class AuthenticationError(BatchgateError):
    """Missing, unknown or revoked API key (HTTP 401)."""

    type = "invalid_request_error"
    default_code = "invalid_api_key"


class NotFoundError(BatchgateError):
    """The object does not exist, or belongs to another project (HTTP 404)."""

    type = "invalid_request_error"
    default_code = "not_found"


class ConflictError(BatchgateError):
    """The object's current state forbids the operation (HTTP 409)."""

    type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(BatchgateError):
    """An upload or body exceeds a configured limit (HTTP 413)."""

    type = "invalid_request_error"
    default_code = "payload_too_large"


class UnprocessableError(BatchgateError):
    """Well-formed but semantically unusable input (HTTP 422)."""

    type = "invalid_request_error"
    default_code = "unprocessable_entity"


class RateLimitError(BatchgateError):
    """Too many requests (HTTP 429)."""

    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class BackendUnavailableError(BatchgateError):
    """The backend could not answer a synchronous request (HTTP 503)."""

    type = "server_error"
    default_code = "backend_unavailable"


class BackendRejectedError(Exception):
    """A backend refused a request with an HTTP-like error response (status and OpenAI
    error body), before producing anything: raised where no response object can carry it."""

    def __init__(self, status_code: int, body: dict):
        super().__init__(body.get("error", {}).get("message", "rejected"))
        self.status_code = status_code
        self.body = body


class JobLostError(Exception):
    """A batch job's worker no longer owns the job (it was presumed dead and the job was
    handed to another worker): the job stops without writing anything more."""


class BackendError(Exception):
    """A backend failed to produce a response for one request line.

    `transient` errors (timeouts, 429, 5xx, dropped connections) are retried by the
    worker up to its attempt limit; the others fail the line at once.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "backend_error",
        transient: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.transient = transient
        self.retry_after = retry_after
