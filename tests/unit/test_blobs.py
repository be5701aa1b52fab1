import os
import subprocess
from pathlib import Path

import pytest

from batchgate.core.errors import NotFoundError
from batchgate.store.blobs import MAX_OPEN_FILES, LocalBlobStore


def test_writes_become_visible_only_on_success(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    with pytest.raises(RuntimeError), blobs.writer("file-a") as w:
        w.write(b"partial")
        raise RuntimeError("client went away")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NotFoundError):
        blobs.open("file-a")
    with blobs.writer("file-a") as w:
        w.write(b"hello ")
        w.write(b"world")
        assert w.size == 11
    assert blobs.open("file-a").read() == b"hello world"


def test_read_range_keeps_a_bounded_set_of_descriptors(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    names = [f"file-{i}" for i in range(MAX_OPEN_FILES + 10)]
    for name in names:
        with blobs.writer(name) as w:
            w.write(name.encode() + b"|tail")
    for _ in range(2):
        for name in names:
            assert blobs.read_range(name, 0, len(name)) == name.encode()
    assert len(blobs._fds) == MAX_OPEN_FILES
    blobs.delete(names[-1])
    assert names[-1] not in blobs._fds and not (tmp_path / names[-1]).exists()
    blobs.close()


def test_only_temp_files_of_dead_writers_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"file-x.tmp-{dead.pid}-2").write_bytes(b"left by a crash")
    (tmp_path / f"file-y.tmp-{os.getppid()}-2").write_bytes(b"another process is uploading this")
    LocalBlobStore(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"file-y.tmp-{os.getppid()}-2"]


def test_ids_cannot_escape_the_store(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    with pytest.raises(NotFoundError):
        blobs.open("../etc/passwd")
