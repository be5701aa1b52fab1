"""Logging of the long-running commands (`serve`, `worker`, `run`): one format, and
warnings and errors that repeat rate-limited.

A worker that cannot write (a full disk, a database gone read-only) fails the same way
on every turn of its loop, several times a second; logging each one, traceback and all,
buries the first report and then fills the very disk that is full. `RepeatFilter` lets
the first of each kind through, then at most one per window, saying how many it dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_KINDS = 1000  # distinct kinds remembered; older ones are forgotten past this


class RepeatFilter(logging.Filter):
    """Passes each kind of warning or error (logger, message template, exception type)
    at most once per `window` seconds; the next one through carries the count dropped."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, str, type | None], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg), record.exc_info[0] if record.exc_info else None)
        now = self.clock()
        with self._lock:
            last = self._seen.get(kind)
            if last is not None and now - last[0] < self.window:
                self._seen[kind] = (last[0], last[1] + 1)
                return False
            if len(self._seen) >= MAX_KINDS:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
            self._seen[kind] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{last[1]} more like this in the last {now - last[0]:.0f} s not logged]"
        return True


def configure(level: str) -> None:
    """Log to stderr at `level`, with repeated warnings and errors rate-limited."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
