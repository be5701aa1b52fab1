"""File retention: when a file expires, and the sweeper that deletes expired files.

A file expires when its upload said so (`expires_after: {anchor: "created_at", seconds}`,
OpenAI's bounds: 1 hour to 30 days), when its batch said so for the result files
(`output_expires_after`), or by the configured default for its purpose; otherwise it is
kept, as before. The sweeper deletes expired files a few hundred at a time (rows first,
atomically with the check that no batch that has not ended reads them, then bytes: a
crash in between leaves bytes no row points to, never a row without its bytes).

Stored responses (POST /v1/responses with `store: true`) expire `response_retention`
seconds after they were created (30 days by default, as OpenAI's); the sweeper deletes
those too. They are not found from the moment they expire (core/response_service.py),
whenever the sweeper gets to them.
"""

from __future__ import annotations

import logging
from typing import Any

from batchgate.core.clock import Clock, SystemClock
from batchgate.core.errors import InvalidRequestError
from batchgate.core.ports import BlobStore, Store

log = logging.getLogger("batchgate.retention")

MIN_SECONDS = 3600
MAX_SECONDS = 30 * 86_400


def expiry_seconds(value: Any, param: str) -> int | None:
    """The seconds of an `expires_after` object (None when not given), or a 400 naming
    the field at fault."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"'{param}' must be an object {{anchor, seconds}}.", param=param, code="invalid_type")
    anchor, seconds = value.get("anchor"), value.get("seconds")
    if anchor != "created_at":
        raise InvalidRequestError(
            f"'{param}.anchor' must be 'created_at'.", param=f"{param}.anchor", code="invalid_value"
        )
    if isinstance(seconds, str) and seconds.strip().isdigit():
        seconds = int(seconds)  # multipart form fields arrive as text
    if type(seconds) is not int or not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InvalidRequestError(
            f"'{param}.seconds' must be an integer from {MIN_SECONDS} (1 hour) to {MAX_SECONDS} (30 days).",
            param=f"{param}.seconds",
            code="invalid_value",
        )
    return seconds


def form_expiry(fields: dict[str, str], name: str = "expires_after") -> int | None:
    """`expires_after` from multipart form fields, as the openai SDK sends it
    (`expires_after[anchor]`, `expires_after[seconds]`)."""
    anchor, seconds = fields.get(f"{name}[anchor]"), fields.get(f"{name}[seconds]")
    if anchor is None and seconds is None:
        return None
    return expiry_seconds({"anchor": anchor, "seconds": seconds}, name)


def expires_at(created_at: int, seconds: int | None) -> int | None:
    return None if seconds is None else created_at + seconds


class Sweeper:
    """Deletes expired files. `sweep` is one bounded step (blocking: call it off the event
    loop); the worker calls it every `interval` seconds of its clock."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        clock: Clock | None = None,
        chunk: int = 500,
        response_retention: int | None = None,
    ):
        self.store = store
        self.blobs = blobs
        self.clock = clock or SystemClock()
        self.chunk = chunk
        self.response_retention = response_retention

    def sweep(self) -> int:
        """Delete up to `chunk` expired files and up to `chunk` expired stored responses;
        how many were deleted (under `chunk`: none are left)."""
        now = int(self.clock.time())
        files = self.store.delete_expired_files(now, self.chunk)
        for file in files:
            self.blobs.delete(file.id)
        if files:
            log.info("deleted %d expired files", len(files))
        responses = 0
        if self.response_retention:
            # expired: created `response_retention` seconds ago or more (core/response_service.py)
            responses = self.store.delete_expired_responses(now - self.response_retention + 1, self.chunk)
            if responses:
                log.info("deleted %d expired stored responses", responses)
        return len(files) + responses
