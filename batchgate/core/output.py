"""Building the output and error files of a finished batch from its request rows.

Lines are assembled from stored JSON bytes without re-parsing bodies, so writing a
million-line output is bound by disk speed, not by JSON encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from batchgate.core.ids import derived_id, now
from batchgate.core.models import BatchRecord, FilePurpose, FileRecord, FinishedRow, RequestState
from batchgate.core.ports import BlobStore, Store
from batchgate.core.retention import expires_at


@dataclass(slots=True)
class ResultFiles:
    files: list[FileRecord]
    output_file_id: str | None
    error_file_id: str | None
    completed: int
    failed: int


def format_line(batch_id: str, row: FinishedRow, custom_id: str) -> bytes:
    """One line of an output or error file, in OpenAI's batch output shape."""
    rid = row.request_id or derived_id("", batch_id, str(row.line))
    head = b'{"id":"batch_req_' + rid.encode() + b'","custom_id":' + orjson.dumps(custom_id)
    if row.status_code is not None:
        response = (
            b',"response":{"status_code":'
            + str(row.status_code).encode()
            + b',"request_id":"req_'
            + rid.encode()
            + b'","body":'
            + (row.body or b"null")
            + (b',"cost":' + repr(row.cost).encode() if row.cost else b"")
            + b"}"
        )
        return head + response + b',"error":null}\n'
    error = orjson.dumps({"code": row.error_code or "error", "message": row.error_message or ""})
    return head + b',"response":null,"error":' + error + b"}\n"


def write_result_files(store: Store, blobs: BlobStore, batch: BatchRecord) -> ResultFiles:
    """Write both files from the rows, in input order. Idempotent: ids derive from the batch,
    so a re-run after a crash overwrites the same blobs instead of leaving orphans."""
    batch_id, project_id = batch.id, batch.project_id
    output_id = derived_id("file-", batch_id, "output")
    error_id = derived_id("file-", batch_id, "errors")
    completed = failed = 0
    with blobs.writer(output_id) as out, blobs.writer(error_id) as err:
        for row in store.iter_finished(batch_id):
            # a line that never ran (cancelled, expired) has no custom_id yet: read it
            custom_id = (
                row.custom_id
                or orjson.loads(blobs.read_range(batch.input_file_id, row.offset, row.length))["custom_id"]
            )
            if row.state == RequestState.SUCCEEDED:
                out.write(format_line(batch_id, row, custom_id))
                completed += 1
            else:
                err.write(format_line(batch_id, row, custom_id))
                failed += 1
        sizes = {output_id: out.size, error_id: err.size}
    created = now()
    files = []
    for file_id, count, purpose, name in (
        (output_id, completed, FilePurpose.BATCH_OUTPUT, "batch_output.jsonl"),
        (error_id, failed, FilePurpose.BATCH_OUTPUT, "batch_errors.jsonl"),
    ):
        if count:
            files.append(
                FileRecord(
                    file_id,
                    project_id,
                    purpose.value,
                    f"{batch_id}_{name}",
                    sizes[file_id],
                    created,
                    expires_at(created, batch.output_expires_after),
                    key_id=batch.key_id,  # the result files belong to the key that made the batch
                )
            )
        else:
            blobs.delete(file_id)  # no empty files: the batch reports null instead of a dangling id
    return ResultFiles(
        files=files,
        output_file_id=output_id if completed else None,
        error_file_id=error_id if failed else None,
        completed=completed,
        failed=failed,
    )
