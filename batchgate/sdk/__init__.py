"""The batchgate Python SDK: `Client` and `AsyncClient` over the gateway's HTTP API.

It depends only on httpx (and rich, imported only to draw progress bars); it never imports
the server, so it can ship on its own.
"""

from __future__ import annotations

from batchgate.sdk.async_client import AsyncClient
from batchgate.sdk.client import Client
from batchgate.sdk.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    BatchgateError,
    ConfigurationError,
    ConflictError,
    JobManifestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    WaitTimeoutError,
)
from batchgate.sdk.types import TERMINAL_STATUSES, Batch

__all__ = [
    "TERMINAL_STATUSES",
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchgateError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "JobManifestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "WaitTimeoutError",
]
