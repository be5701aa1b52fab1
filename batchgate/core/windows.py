"""Completion windows: "24h", "30m", "72h", "90s", "2d"."""

from __future__ import annotations

import re

from batchgate.core.errors import InvalidRequestError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = 365 * 86400
# at most 12 digits: 365 days in seconds has 8, and Python refuses to read past 4,300 (a 500)
_WINDOW = re.compile(r"^\s*(\d{1,12})\s*([smhd])\s*$")


def parse_completion_window(window: str) -> int:
    """The window in seconds. Raises InvalidRequestError naming `completion_window`."""
    match = _WINDOW.match(window) if isinstance(window, str) else None
    if not match or not 0 < int(match.group(1)) * _UNITS[match.group(2)] <= MAX_WINDOW:
        raise InvalidRequestError(
            f"Invalid completion_window {window!r}: use a positive duration of at most 365 days, "
            'such as "24h", "30m", "72h", "90s" or "2d".',
            param="completion_window",
            code="invalid_value",
        )
    return int(match.group(1)) * _UNITS[match.group(2)]
