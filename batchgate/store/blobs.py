"""File bytes on the local disk: one file per id under `<data dir>/files/`.

Writes go to a temporary name and are renamed into place on success, so a reader
never sees a half-written file and a crash leaves only a temp file to sweep.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from batchgate.core.errors import InsufficientStorageError, NotFoundError
from batchgate.store.private import FILE_MODE, private_dir

MAX_OPEN_FILES = 32


def _writer_alive(temp_name: str) -> bool:
    """Whether the process that writes this temp file (`<id>.tmp-<pid>-<thread>`) still
    runs: several processes share a data dir, and one's start must not eat another's upload."""
    try:
        pid = int(temp_name.rsplit(".tmp-", 1)[1].split("-")[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


class _FileWriter:
    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self.size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self.size += len(data)


class LocalBlobStore:
    def __init__(self, root: Path):
        self.root = root
        private_dir(root)
        for temp in root.glob("*.tmp-*"):
            if not _writer_alive(temp.name):
                temp.unlink(missing_ok=True)  # left by a crash mid-write
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def _path(self, blob_id: str) -> Path:
        if "/" in blob_id or blob_id.startswith("."):
            raise NotFoundError(f"No such file: {blob_id}")
        return self.root / blob_id

    @contextmanager
    def writer(self, blob_id: str) -> Iterator[_FileWriter]:
        final = self._path(blob_id)
        temp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            os.fchmod(fd, FILE_MODE)  # whatever the umask
            with open(fd, "wb", buffering=1 << 20) as handle:
                yield _FileWriter(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
            self._forget(blob_id)
        except OSError as exc:
            # also when closing the file flushes its last buffer onto a disk just filled
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorageError(
                    "The data dir's disk is full: the file was not stored. Free space (deleting files works) and retry."
                ) from exc
            raise
        finally:
            temp.unlink(missing_ok=True)

    def open(self, blob_id: str) -> BinaryIO:
        try:
            return open(self._path(blob_id), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"The content of file {blob_id} is missing.") from None

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        # the worker reads one line at a time from a few input files: keep a small set of
        # descriptors open (pread needs no seek, so one fd serves every reader)
        with self._lock:
            fd = self._fds.pop(blob_id, None)
            if fd is None:
                fd = os.open(self._path(blob_id), os.O_RDONLY)
                if len(self._fds) >= MAX_OPEN_FILES:
                    os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[blob_id] = fd  # most recently used last
            return os.pread(fd, length, offset)

    def delete(self, blob_id: str) -> None:
        self._forget(blob_id)
        self._path(blob_id).unlink(missing_ok=True)

    def _forget(self, blob_id: str) -> None:
        with self._lock:
            fd = self._fds.pop(blob_id, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
