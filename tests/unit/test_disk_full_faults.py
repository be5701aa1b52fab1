"""A full disk without root (issue 11, defect 8): ENOSPC injected where the OS reports
it, for machines where tests/integration/test_disk_full.py cannot mount its tmpfs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from batchgate.core.errors import InsufficientStorageError
from batchgate.core.files import FileService
from batchgate.store.blobs import LocalBlobStore
from batchgate.store.disk import storage_problem
from batchgate.testing import InMemoryStore


def no_space(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_blob_that_does_not_fit_is_refused_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    blobs = LocalBlobStore(tmp_path)
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(InsufficientStorageError), blobs.writer("file-a") as out:
        out.write(b"x" * 100)
    assert list(tmp_path.iterdir()) == []


class FullStore(InMemoryStore):
    """A store on a disk with no byte left until `blob` is deleted: every write fails."""

    def __init__(self, blob: Path):
        super().__init__()
        self.blob = blob
        self.full = False

    def delete_file(self, file_id: str, project_id: str) -> bool:
        if self.full and self.blob.exists():
            raise InsufficientStorageError("disk full")
        return super().delete_file(file_id, project_id)

    def add_file(self, record) -> None:  # type: ignore[no-untyped-def]
        if self.full:
            raise InsufficientStorageError("disk full")
        super().add_file(record)


def test_deleting_a_file_frees_its_bytes_first_on_a_full_disk(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    store = FullStore(tmp_path / "pending")
    files = FileService(store, blobs, max_file_bytes=1 << 20)
    project = store.ensure_project("p", 0).id
    with files.upload(project) as upload:
        upload.write(b"{}\n" * 1000)
        record = upload.commit("batch", "in.jsonl")
    store.blob, store.full = tmp_path / record.id, True
    files.delete(project, record.id)
    assert store.get_file(record.id, project) is None
    assert not (tmp_path / record.id).exists()


def test_an_upload_whose_row_cannot_be_written_keeps_no_bytes(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    store = FullStore(tmp_path / "none")
    files = FileService(store, blobs, max_file_bytes=1 << 20)
    project = store.ensure_project("p", 0).id
    store.full = True
    with pytest.raises(InsufficientStorageError), files.upload(project) as upload:
        upload.write(b"{}\n")
        upload.commit("batch", "in.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_storage_problem_reports_too_little_space_and_unwritable_dirs(tmp_path: Path) -> None:
    assert storage_problem(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe cleans up after itself
    problem = storage_problem(tmp_path, min_free=1 << 62)
    assert problem is not None and problem.startswith("disk full")
    problem = storage_problem(tmp_path / "missing")
    assert problem is not None and "cannot reach" in problem
