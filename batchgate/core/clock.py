"""Time, as the batch lifecycle reads it: expiry, heartbeats, reaping, job wake-ups and
retry backoff all ask a `Clock`, so tests can move time instead of waiting for it
(`batchgate.testing.FakeClock`). Pacing that only keeps the loops efficient (how often
results are flushed, how long an idle worker waits for work) stays on real time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch. Stored (heartbeats, batch stamps) and compared across
        processes, so every clock of one deployment must agree."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time (a retry's backoff)."""
        ...


class SystemClock:
    """The real time."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
