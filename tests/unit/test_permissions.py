"""The data dir is private whatever the umask (issue 11, defect 13): directories 0700,
the database with its -wal and -shm files 0600, every stored file 0600. Real SQLite and
real files, run through a batch so that result files are written too."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import chat_line, jsonl

from batchgate.app import build_services, job_runner, upgrade_database_apart
from batchgate.core.models import BatchStatus
from batchgate.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_everything_in_the_data_dir_is_private(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "data"
    settings = Settings(home=home, backend="scripted", insecure_no_auth=True)
    upgrade_database_apart(settings)  # as `batchgate serve` starts: the migration in a child
    services = build_services(settings)
    try:
        project = services.keys.default_project().id
        with services.files.upload(project) as upload:
            upload.write(jsonl([chat_line("a"), chat_line("b")]))
            file = upload.commit("batch", "input.jsonl")
        batch = services.batches.create(project, file.id, "/v1/chat/completions", "24h")
        runner = job_runner(settings, services.store, services.blobs)
        job = services.store.claim_batch_job("w", 2**40)
        assert job is not None
        runner.run(job)  # validation
        services.store.release_batch_job(batch.id, "w", 0)
        services.batches.cancel(project, batch.id)
        job = services.store.claim_batch_job("w", 2**40)
        assert job is not None
        runner.run(job)  # cancel: settles the lines and writes the error file
        ended = services.batches.get(project, batch.id)
        assert ended.status == BatchStatus.CANCELLED and ended.error_file_id is not None

        assert mode(home) == 0o700
        assert mode(home / "files") == 0o700
        for name in ("batchgate.db", "batchgate.db-wal", "batchgate.db-shm", "batchgate.migrate.lock"):
            assert mode(home / name) == 0o600, name
        stored = list((home / "files").iterdir())
        assert {p.name for p in stored} >= {file.id, ended.error_file_id}
        assert {p.name: mode(p) for p in stored} == {p.name: 0o600 for p in stored}
    finally:
        services.close()


def test_a_data_dir_made_before_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "data"
    build_services(Settings(home=home, backend="scripted")).close()
    for path in (home, home / "files"):
        path.chmod(0o755)
    (home / "batchgate.db").chmod(0o644)
    services = build_services(Settings(home=home, backend="scripted"))
    try:
        assert (mode(home), mode(home / "files"), mode(home / "batchgate.db")) == (0o700, 0o700, 0o600)
    finally:
        services.close()


def test_a_shared_scratch_dir_given_as_the_data_dir_is_left_usable(tmp_path: Path) -> None:
    shared = tmp_path / "scratch"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    services = build_services(Settings(home=shared, backend="scripted"))
    try:
        assert mode(shared) == 0o1777
        assert (mode(shared / "files"), mode(shared / "batchgate.db")) == (0o700, 0o600)
    finally:
        services.close()
