"""Chunked jobs: a large list or file of records run as many operation batches, resumable.

`run_job` splits the records into chunks of `chunk_size`, submits one operation batch per
chunk, and after each submission records the chunk in a JSON *manifest* on disk — written
to a temporary file, fsynced and renamed over the old one, so the manifest on disk is
always complete — before the next chunk is submitted. Once every chunk is submitted it
waits for the batches in chunk order and emits `(chunk_index, rows)` per chunk.

Re-running with the same manifest resumes: recorded chunks are re-polled, never submitted
again. The one chunk that may have been submitted but not yet recorded when the process
died is found on the server by the job id and chunk number the SDK puts in every batch's
metadata (`batchgate_job`, `batchgate_chunk`), so it is not submitted twice either.
Results are not tracked: a resumed job emits every chunk again, including those a killed
run had already emitted, so consumers should key results by `custom_id`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from batchgate.protocol.records import RecordsError, detect_format, iter_records
from batchgate.sdk._core import Call, Emit, Op
from batchgate.sdk._ops import Ops
from batchgate.sdk.errors import BadRequestError, JobManifestError

MANIFEST_VERSION = 1
ORPHAN_SCAN_PAGES = 10
OUTPUT_PAGE = 1000


class Source:
    """The records of a job, as a fingerprint and a fresh iterator on demand."""

    def __init__(self, records: Sequence[Any] | str | os.PathLike[str], fmt: str | None, content_column: str | None):
        self.fmt, self.content_column = fmt, content_column
        if isinstance(records, str | os.PathLike):
            self.path: Path | None = Path(records)
            self.records: Sequence[Any] = ()
        else:
            self.path, self.records = None, records

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        if self.path is not None:
            with open(self.path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        else:
            for item in self.records:
                digest.update(json.dumps(item, sort_keys=True, default=str).encode() + b"\n")
        return digest.hexdigest()

    def items(self) -> Iterator[Any]:
        if self.path is not None:
            return file_items(self.path, self.fmt, self.content_column)
        return iter(self.records)


def file_items(path: Path, fmt: str | None, content_column: str | None) -> Iterator[dict[str, Any]]:
    """The items of a local CSV / JSON / JSONL / text file, read by the same parser and rules
    as the server's `POST /api/files`, streamed (a JSON array too). A record whose content
    is not under `content` travels as `{"content", "metadata"}`."""
    try:
        with open(path, "rb") as stream:
            for record in iter_records(stream, detect_format(path.name, fmt), content_column):
                if record.column == "content":
                    yield record.fields
                else:
                    yield {"content": record.content, "metadata": record.metadata}
    except RecordsError as exc:
        raise BadRequestError(f"{path.name}: {exc.message}", param=exc.param) from None


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def params_hash(operation: str, chunk_size: int, params: dict[str, Any]) -> str:
    spec = {"operation": operation, "chunk_size": chunk_size, "params": params}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace `path`: a crash leaves the old manifest or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_manifest(path: Path, source_hash: str, spec_hash: str) -> dict[str, Any] | None:
    """The manifest at `path` if there is one, checked to belong to this source and these parameters."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise JobManifestError(f"cannot read the job manifest {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise JobManifestError(f"{path} is not a batchgate job manifest (version {MANIFEST_VERSION})")
    if manifest.get("source") != source_hash:
        raise JobManifestError(
            f"the manifest {path} was written for other input records; "
            "use another manifest path for a new job, or delete it to start over",
            code="manifest_source_mismatch",
        )
    if manifest.get("params") != spec_hash:
        raise JobManifestError(
            f"the manifest {path} was written for other parameters (operation, chunk_size or operation "
            "parameters differ); use another manifest path for a new job, or delete it to start over",
            code="manifest_params_mismatch",
        )
    return manifest


def run_job(
    ops: Ops,
    source: Source,
    operation: str,
    chunk_size: int,
    manifest_path: Path,
    params: dict[str, Any],
    poll_interval: float,
    progress: bool | None,
) -> Op[None]:
    """Submit every chunk not yet in the manifest, then emit `(chunk_index, rows)` per chunk in
    order as its batch ends. Each row gains `chunk` and `custom_id` = f"{chunk}-{index}", unique
    across the job (`index` is the row's position within its chunk)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    user_metadata = dict(params.pop("metadata", None) or {})
    source_hash, spec_hash = (
        source.fingerprint(),
        params_hash(operation, chunk_size, {**params, "metadata": user_metadata}),
    )
    manifest = load_manifest(manifest_path, source_hash, spec_hash)
    # only the first chunk a killed run did not record can have been submitted unrecorded
    check_orphan = manifest is not None
    if manifest is None:
        manifest = {
            "version": MANIFEST_VERSION,
            "job_id": uuid.uuid4().hex,
            "operation": operation,
            "chunk_size": chunk_size,
            "source": source_hash,
            "params": spec_hash,
            "created_at": int(time.time()),
            "chunks": [],
        }
        write_manifest(manifest_path, manifest)
    recorded = {entry["chunk"]: entry for entry in manifest["chunks"]}
    for index, items in enumerate(chunked(source.items(), chunk_size)):
        if index in recorded:
            if recorded[index]["items"] != len(items):
                raise JobManifestError(f"chunk {index} had {recorded[index]['items']} items, now {len(items)}")
            continue
        batch_id = None
        if check_orphan:
            check_orphan = False
            batch_id = yield from _find_orphan(ops, manifest, index)
        if batch_id is None:
            metadata = {**user_metadata, "batchgate_job": manifest["job_id"], "batchgate_chunk": str(index)}
            batch = yield from ops.submit(operation, items, {**params, "metadata": metadata})
            batch_id = batch.id
        entry = {"chunk": index, "batch_id": batch_id, "items": len(items)}
        manifest["chunks"].append(entry)
        recorded[index] = entry
        write_manifest(manifest_path, manifest)
    for entry in sorted(manifest["chunks"], key=lambda e: e["chunk"]):
        yield from ops.wait(entry["batch_id"], None, poll_interval, progress)
        rows: list[dict[str, Any]] = []
        while True:
            page = yield from ops.page(entry["batch_id"], len(rows), OUTPUT_PAGE)
            rows.extend(page.results)
            if not page.results or not page.has_more:
                break
        for row in rows:
            row["chunk"] = entry["chunk"]
            row["custom_id"] = f"{entry['chunk']}-{row['index']}"
        yield Emit((entry["chunk"], rows))


def _find_orphan(ops: Ops, manifest: dict[str, Any], chunk: int) -> Op[str | None]:
    """The batch of `chunk` if a killed run submitted it but died before recording it.

    Batches are listed newest first; the scan stops at the previous chunk's batch (anything
    older cannot be this chunk's) or after a few pages.
    """
    previous = next((e["batch_id"] for e in manifest["chunks"] if e["chunk"] == chunk - 1), None)
    after = None
    for _ in range(ORPHAN_SCAN_PAGES):
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        page = yield from ops.json(Call("GET", "/v1/batches", params=params))
        for batch in page["data"]:
            metadata = batch.get("metadata") or {}
            if metadata.get("batchgate_job") == manifest["job_id"] and metadata.get("batchgate_chunk") == str(chunk):
                return str(batch["id"])
            if batch["id"] == previous or (batch.get("created_at") or 0) < manifest["created_at"] - 300:
                return None
        if not page.get("has_more"):
            return None
        after = page["data"][-1]["id"]
    return None
