"""Identifiers in the OpenAI style (`file-…`, `batch_…`, `batch_req_…`)."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id from its parts: re-running a step after a crash reuses the same id."""
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:24]


def now() -> int:
    return int(time.time())


class IdSequence:
    """Unique ids for high-rate, non-secret uses (one per request line or HTTP request):
    a random per-process prefix and a counter. `secrets.token_hex` reads os.urandom,
    which drops the GIL on every call and stalls under thread contention."""

    def __init__(self, prefix: str = ""):
        self._prefix = prefix + secrets.token_hex(6)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"
