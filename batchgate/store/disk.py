"""Whether the data dir can take writes: the readiness check behind /ready."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

# below this much free space SQLite's next transactions and uploads start to fail
MIN_FREE_BYTES = 1 << 20
PROBE_BYTES = 4096


def storage_problem(path: Path, min_free: int = MIN_FREE_BYTES) -> str | None:
    """What stops the data dir at `path` from storing anything now (a full disk, a
    read-only or vanished mount, a quota), or None."""
    try:
        stats = os.statvfs(path)
    except OSError as exc:
        return f"cannot reach the data dir: {exc.strerror}"
    free = stats.f_bavail * stats.f_frsize
    if free < min_free:
        return f"disk full: {free} bytes free in the data dir, {min_free} needed"
    # free space is not the whole story (a quota, a read-only remount): write a little
    probe = path / f".ready-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
    except OSError as exc:
        return f"cannot write to the data dir: {exc.strerror}"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return None
