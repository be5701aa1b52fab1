"""The data dir is private to the user who runs batchgate: directories 0700, files 0600,
whatever the umask (a umask of 022 would leave uploads and the database, API key hashes
and every prompt and answer, readable by every local user)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) if needed, and make it 0700 — unless it is a
    shared scratch directory (sticky bit, like /tmp, given as the data dir itself),
    which must stay usable by others: the database and `files/` in it are private anyway."""
    path.mkdir(parents=True, exist_ok=True)
    if not path.stat().st_mode & stat.S_ISVTX:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty if missing, and make it 0600 (an existing file keeps its bytes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits off, or the file predates this
    finally:
        os.close(fd)
    return path


def private_database(path: Path) -> None:
    """The SQLite database and its WAL and shared-memory files, 0600. SQLite creates the
    -wal and -shm files with the database's own mode, so a new one needs only the
    database made first; these calls tighten the files of a data dir made before."""
    private_dir(path.parent)
    private_file(path)
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):  # none yet, or its last user just closed it
            os.chmod(companion, FILE_MODE)
