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


def test_stale_temp_files_are_swept_and_ids_cannot_escape(tmp_path: Path) -> None:
    (tmp_path / "file-x.tmp-1-2").write_bytes(b"left by a crash")
    blobs = LocalBlobStore(tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NotFoundError):
        blobs.open("../etc/passwd")
