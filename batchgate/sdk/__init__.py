"""The batchgate Python SDK: `Client` and `AsyncClient` over the gateway's HTTP API.

It depends on httpx and on `batchgate.protocol` (the wire models the server uses too, on
pydantic; and the record file parser), plus rich, imported only to draw progress bars; it
never imports the server, so it can ship on its own.

Written to be a drop-in for AgentFlow's SDK: `from batchgate import Client as AgentFlow`.
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
from batchgate.sdk.types import TERMINAL_STATUSES, Batch, CompletionResult, OutputPage

__all__ = [
    "TERMINAL_STATUSES",
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchgateError",
    "Client",
    "CompletionResult",
    "ConfigurationError",
    "ConflictError",
    "JobManifestError",
    "NotFoundError",
    "OutputPage",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "WaitTimeoutError",
]
