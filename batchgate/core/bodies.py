"""Opt-in stored bodies for request logs.

A project may ask (`POST /v1/admin/projects/{project}/logging`) that the request and
response bodies of its synchronous requests be kept with their ledger rows, each cut at
`body_cap_bytes` (16 KiB unless set) and marked truncated when cut; `GET /v1/logs/{id}`
returns them. Off by default: nothing is stored. Batch lines are not copied: their
bodies are in the batch's input and output files already.

The bodies are written after the ledger row, in their own transaction: a crash between
the two loses the bodies of that request (never its ledger row).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

DEFAULT_BODY_CAP = 16 * 1024
MAX_BODY_CAP = 1 << 20  # 1 MiB per body
SETTINGS_TTL = 5.0  # seconds a project's setting is cached per process: a change applies within it


@dataclass(frozen=True, slots=True)
class BodySettings:
    store_bodies: bool = False
    body_cap_bytes: int = DEFAULT_BODY_CAP


@dataclass(frozen=True, slots=True)
class RequestBodies:
    """A request's stored bodies, as text (UTF-8; a cut mid-character is replaced)."""

    request: str
    response: str
    request_truncated: bool = False
    response_truncated: bool = False


@dataclass(slots=True)
class Capture:
    """The first `cap` bytes of a body that arrives in pieces."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data.extend(chunk)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def captured(request: Capture, response: Capture) -> RequestBodies:
    return RequestBodies(request.text(), response.text(), request.truncated, response.truncated)


class SettingsCache:
    """Each project's BodySettings, read from the store at most once a SETTINGS_TTL."""

    def __init__(self) -> None:
        self._cached: dict[str, tuple[BodySettings, float]] = {}

    def get(self, project_id: str) -> BodySettings | None:
        """The cached settings, or None when they must be read again."""
        hit = self._cached.get(project_id)
        return hit[0] if hit is not None and time.monotonic() - hit[1] < SETTINGS_TTL else None

    def put(self, project_id: str, settings: BodySettings) -> BodySettings:
        if len(self._cached) > 4096:
            self._cached.clear()
        self._cached[project_id] = (settings, time.monotonic())
        return settings
