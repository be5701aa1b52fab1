"""Identifiers in the OpenAI style (`file-…`, `batch_…`, `batch_req_…`)."""

from __future__ import annotations

import hashlib
import secrets
import time


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id from its parts: re-running a step after a crash reuses the same id."""
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:24]


def now() -> int:
    return int(time.time())
