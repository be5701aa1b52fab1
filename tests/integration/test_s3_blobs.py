"""The S3 blob store against a real S3-protocol server (moto's server mode, a separate
process): multipart uploads and streamed, seekable downloads in constant memory, aborted
uploads leave nothing, and a `batchgate serve` on BATCHGATE_BLOB_URL runs a batch with
its files in the bucket."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from support import TERMINAL, Server, chat_line, free_port, jsonl, parse_jsonl, wait_for

from batchgate.core.errors import NotFoundError
from batchgate.store.s3 import PARTS_IN_FLIGHT, S3BlobStore

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part
BUCKET = "batchgate-test"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - the server's
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    try:
        wait_for(lambda: _reachable(env["AWS_ENDPOINT_URL"]), 30, 0.1)
        yield env
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def _reachable(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


@pytest.fixture
def s3(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """`total` deterministic bytes, `size` at a time."""
    pattern = hashlib.sha256(b"batchgate").digest() * (size // 32)
    for start in range(0, total, size):
        yield pattern[: min(size, total - start)]


def digest(parts: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def test_a_large_file_goes_up_in_parts_and_comes_back_streamed_and_seekable(s3: object) -> None:
    blobs = S3BlobStore(f"s3://{BUCKET}/files", part_size=PART)
    total = 4 * PART + 123
    with blobs.writer("file-big") as w:
        for chunk in chunks(total):
            w.write(chunk)
    assert w.size == total
    head = s3.head_object(Bucket=BUCKET, Key="files/file-big")  # type: ignore[attr-defined]
    assert head["ContentLength"] == total
    assert head["ETag"].strip('"').endswith("-5"), "a multipart upload of 5 parts"

    expected = b"".join(chunks(total))
    with blobs.open("file-big") as f:
        assert digest(iter(lambda: f.read(MIB), b"")) == hashlib.sha256(expected).hexdigest()
        f.seek(total - 100)  # output pages and validation seek
        assert f.read() == expected[-100:]
        f.seek(PART - 7)
        assert f.read(14) == expected[PART - 7 : PART + 7]
        assert f.seek(0, os.SEEK_END) == total
    assert blobs.read_range("file-big", 3 * PART - 5, 10) == expected[3 * PART - 5 : 3 * PART + 5]


def peaks(blobs: S3BlobStore, total: int) -> tuple[int, int]:
    """Python's peak allocation while `total` bytes go up, and while they come back."""
    tracemalloc.start()
    try:
        with blobs.writer(f"file-{total}") as w:
            for chunk in chunks(total):
                w.write(chunk)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with blobs.open(f"file-{total}") as f:
            read = sum(len(block) for block in iter(lambda: f.read(MIB), b""))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == total
    return write_peak, read_peak


def test_memory_stays_flat_whatever_the_size(s3: object) -> None:
    blobs = S3BlobStore(f"s3://{BUCKET}/files", part_size=PART)
    write_peak, read_peak = peaks(blobs, 8 * PART)
    twice_write_peak, twice_read_peak = peaks(blobs, 16 * PART)
    # the part filling and the parts in flight (with the client's copies of them), not the file
    bound = 2 * (1 + PARTS_IN_FLIGHT) * PART
    assert write_peak < bound and twice_write_peak < bound, (
        f"upload peaks {write_peak / MIB:.1f}, {twice_write_peak / MIB:.1f} MiB"
    )
    assert twice_write_peak < write_peak + PART, "twice the size, the same memory"
    assert read_peak < 8 * MIB and twice_read_peak < 8 * MIB, (
        f"download peaks {read_peak / MIB:.1f}, {twice_read_peak / MIB:.1f} MiB"
    )


def test_a_failed_upload_leaves_neither_an_object_nor_parts(s3: object) -> None:
    blobs = S3BlobStore(f"s3://{BUCKET}/files", part_size=PART)
    with pytest.raises(RuntimeError), blobs.writer("file-broken") as w:
        for chunk in chunks(2 * PART + 10):
            w.write(chunk)
        raise RuntimeError("the client went away")
    with pytest.raises(NotFoundError):
        blobs.open("file-broken")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # type: ignore[attr-defined]


class FailingPart:
    """The S3 client, except that sending part 2 fails (after parts beside it started)."""

    def __init__(self, client: Any):
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def upload_part(self, **kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 2:
            raise ConnectionError("the object store went away")
        return self.client.upload_part(**kwargs)


def test_a_part_that_fails_to_send_fails_the_upload_and_leaves_nothing(s3: object) -> None:
    blobs = S3BlobStore(f"s3://{BUCKET}/files", client=FailingPart(s3), part_size=PART)
    with pytest.raises(ConnectionError), blobs.writer("file-part-lost") as w:
        for chunk in chunks(6 * PART + 10):
            w.write(chunk)
    with pytest.raises(NotFoundError):
        blobs.open("file-part-lost")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # type: ignore[attr-defined]


def test_small_files_deletes_and_missing_files(s3: object) -> None:
    blobs = S3BlobStore(f"s3://{BUCKET}", part_size=PART)
    with blobs.writer("file-small") as w:
        w.write(b'{"a": 1}\n')
        w.write(b'{"b": 2}\n')
    with blobs.open("file-small") as f:
        assert f.readlines() == [b'{"a": 1}\n', b'{"b": 2}\n']
    assert blobs.read_range("file-small", 9, 8) == b'{"b": 2}'
    blobs.delete("file-small")
    blobs.delete("file-small")  # deleting twice is fine
    with pytest.raises(NotFoundError):
        blobs.open("file-small")
    with pytest.raises(NotFoundError):
        blobs.read_range("file-small", 0, 1)


def test_a_server_keeps_its_files_in_the_bucket(
    s3: object, s3_env: dict[str, str], start_server: Callable[..., Server]
) -> None:
    server = start_server(env={**s3_env, "BATCHGATE_BLOB_URL": f"s3://{BUCKET}/gateway"})
    key = server.create_key("p")
    c = httpx.Client(base_url=server.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    ids = [f"s{i}" for i in range(200)]
    file_id = c.post(
        "/files",
        files={"file": ("in.jsonl", jsonl([chat_line(i, f"say {i}") for i in ids]))},
        data={"purpose": "batch"},
    ).json()["id"]
    batch_id = c.post(
        "/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    ).json()["id"]
    batch = wait_for(lambda: (b := c.get(f"/batches/{batch_id}").json())["status"] in TERMINAL and b, 60, 0.1)
    assert batch["status"] == "completed"
    out = parse_jsonl(c.get(f"/files/{batch['output_file_id']}/content").content)
    assert [r["custom_id"] for r in out] == ids
    assert out[7]["response"]["body"]["choices"][0]["message"]["content"] == "echo: say s7"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="gateway/")["Contents"]}  # type: ignore[attr-defined]
    assert keys == {f"gateway/{file_id}", f"gateway/{batch['output_file_id']}"}
    assert not list((server.data_dir / "files").glob("file-*")), "nothing in the data dir"
    assert c.delete(f"/files/{file_id}").status_code == 200
    assert f"gateway/{file_id}" not in {
        o["Key"]
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="gateway/").get("Contents", [])  # type: ignore[attr-defined]
    }


def test_the_blob_url_must_be_s3(tmp_path: Path) -> None:
    from batchgate.app import open_blobs
    from batchgate.core.errors import InvalidRequestError
    from batchgate.settings import Settings

    with pytest.raises(InvalidRequestError, match="s3://bucket/prefix"):
        open_blobs(Settings(home=tmp_path, blob_url="gs://bucket"))
