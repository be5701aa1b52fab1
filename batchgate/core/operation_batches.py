"""Operation batches: an operation over any number of items, from a request body or an
uploaded file of records, run as an ordinary batch underneath.

Submitting compiles the items into two files: the items file (each item's input record,
for the output rows) and an ordinary OpenAI batch input file, one `/v1/chat/completions`
line per item with custom_id `item-0000000`, `item-0000001`, … The batch then runs
through the same state machine, worker, crash safety, cancel, expiry, usage and cost as
any other. Its output is read back by `core/operation_output.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from batchgate.core import operation_output
from batchgate.core.batches import BatchService, check_metadata
from batchgate.core.errors import BatchgateError, ConflictError, InvalidRequestError
from batchgate.core.files import FileService
from batchgate.core.models import BatchRecord, BatchStatus, FilePurpose
from batchgate.core.operation_runs import CHAT, OperationRuns, item_id, item_of, records_of
from batchgate.core.operations import Operation, compile_request
from batchgate.core.windows import parse_completion_window
from batchgate.protocol.operations import (
    BatchCreateRequest,
    BatchOptions,
    BatchParams,
    BatchState,
    OperationBatch,
    OperationBatchList,
    OperationRow,
    OperationUsage,
    OutputFormat,
    OutputPage,
    RecordsUpload,
)
from batchgate.protocol.records import Record, RecordsError, detect_format, iter_records

MAX_RECORD_FILE_BYTES = 100 * 1024 * 1024
MAX_PAGE_ROWS = 10_000  # a JSON page; JSONL and CSV stream the whole output
MAX_COLUMNS = 1_000  # distinct input fields across a batch's items: the CSV output's columns
# what a batch request holds besides its operation's parameters
BATCH_FIELDS = frozenset(BatchOptions.model_fields) | {"operation", "items", "file_id"}
ENDED = (BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.EXPIRED)
# an operation batch's status, in the words of the operations API
STATES: dict[BatchStatus, BatchState] = {
    BatchStatus.VALIDATING: "queued",
    BatchStatus.IN_PROGRESS: "processing",
    BatchStatus.FINALIZING: "processing",
    BatchStatus.CANCELLING: "processing",
    BatchStatus.COMPLETED: "completed",
    BatchStatus.FAILED: "failed",
    BatchStatus.CANCELLED: "cancelled",
    BatchStatus.EXPIRED: "expired",
}


@dataclass(frozen=True, slots=True)
class Output:
    """An output ready to stream: refused errors are raised before it exists."""

    media_type: str
    chunks: Iterator[bytes]
    filename: str | None = None


class OperationBatches:
    def __init__(self, files: FileService, batches: BatchService, runs: OperationRuns, max_items: int):
        self.files = files
        self.batches = batches
        self.runs = runs
        self.max_items = max_items

    # ---- submitting --------------------------------------------------------------------

    def create(self, project_id: str, request: BatchCreateRequest) -> OperationBatch:
        """A batch over the request's `items`, or over the records of its `file_id`."""
        op = self._operation(request)
        if request.file_id is not None:
            if request.items is not None:
                raise InvalidRequestError("Give either 'items' or 'file_id', not both.", param="file_id")
            return self.from_file(project_id, op, request.file_id, request)
        if request.items is None:
            raise InvalidRequestError("Missing required parameter 'items' (or 'file_id').", param="items")
        records = records_of([item.model_dump(exclude_unset=True) for item in request.items])
        return self._submit(project_id, op, iter(records), request)

    def upload(self, project_id: str, form: RecordsUpload, file_id: str) -> OperationBatch:
        """A batch over an uploaded file of records (`POST /api/files`). A file nothing was
        made of is not kept."""
        try:
            return self.from_file(project_id, self._operation(form), file_id, form)
        except BatchgateError:
            self.files.delete(project_id, file_id)
            raise

    def from_file(self, project_id: str, op: Operation, file_id: str, options: BatchParams) -> OperationBatch:
        """A batch of the records in a stored file, parsed as they stream from disk."""
        record, stream = self.files.open(project_id, file_id)
        with stream:
            try:
                fmt = detect_format(record.filename, options.format)
                records = iter_records(stream, fmt, options.content_column, self.max_items)
            except RecordsError as exc:
                raise InvalidRequestError(exc.message, param=exc.param) from None
            return self._submit(project_id, op, _wrapped(records), options, source_file_id=file_id)

    def _operation(self, request: BatchParams) -> Operation:
        params = request.model_dump(exclude_none=True, by_alias=True, exclude=set(BATCH_FIELDS))
        return self.runs.operation(request.operation, params)

    def _submit(
        self,
        project_id: str,
        op: Operation,
        records: Iterator[Record],
        options: BatchParams,
        source_file_id: str | None = None,
    ) -> OperationBatch:
        """Compile the records into an ordinary batch (see the module doc) and create it.
        `records` may be a lazy stream (an uploaded file being parsed): nothing is held
        whole; an error while reading it discards both files. A batch refused (a bad
        `completion_window` or `metadata`, no items) keeps no file: checked before any is
        written, or the files deleted."""
        window = options.completion_window or "24h"
        parse_completion_window(window)
        check_metadata(options.metadata)
        count = 0
        columns: dict[str, None] = {}  # every input field, in first-seen order
        with self.files.upload(project_id) as kept, self.files.upload(project_id) as requests:
            for index, record in enumerate(records):
                count += 1
                columns.update(dict.fromkeys(record.fields))
                if len(columns) > MAX_COLUMNS:
                    raise InvalidRequestError(
                        f"The items have more than {MAX_COLUMNS} distinct fields between them.", param="items"
                    )
                kept.write(operation_output.item_line(index, record.fields))
                body = compile_request(op, item_of(record))
                line = {"custom_id": item_id(index), "method": "POST", "url": CHAT, "body": body}
                requests.write(orjson.dumps(line) + b"\n")
            if count == 0:  # raised before the commits: both uploads are discarded
                raise InvalidRequestError("There are no items to run.", param="items")
            items_file = kept.commit(FilePurpose.BATCH.value, "items.jsonl")
            input_file = requests.commit(FilePurpose.BATCH.value, "requests.jsonl")
        spec: dict[str, Any] = {
            "operation": op.to_json(),
            "items_file_id": items_file.id,
            "items": count,
            "columns": list(columns),
        }
        if source_file_id is not None:
            spec["file_id"] = source_file_id
        try:
            batch = self.batches.create(project_id, input_file.id, CHAT, window, options.metadata, operation=spec)
        except BatchgateError:
            for file_id in (input_file.id, items_file.id):  # the batch they were for was refused
                self.files.delete(project_id, file_id)
            raise
        return status_of(batch)

    # ---- reading -----------------------------------------------------------------------

    def get(self, project_id: str, batch_id: str) -> BatchRecord:
        batch = self.batches.get(project_id, batch_id)
        if batch.source != "operation":  # agent and swarm batches keep their spec in `operation` too
            raise InvalidRequestError(
                f"Batch {batch_id} is not an operation batch; read it with GET /v1/batches/{batch_id}.",
                param="batch_id",
            )
        return batch

    def status(self, project_id: str, batch_id: str) -> OperationBatch:
        return status_of(self.get(project_id, batch_id))

    def cancel(self, project_id: str, batch_id: str) -> OperationBatch:
        self.get(project_id, batch_id)
        return status_of(self.batches.cancel(project_id, batch_id))

    def list(self, project_id: str, after: str | None, limit: int) -> OperationBatchList:
        """The project's operation batches, newest first; the store filters before it pages."""
        page = self.batches.list(project_id, after, limit, source="operation")
        last = page.data[-1].id if page.data else None
        return OperationBatchList(data=[status_of(b) for b in page.data], has_more=page.has_more, last_id=last)

    def output(
        self, project_id: str, batch_id: str, fmt: OutputFormat, offset: int = 0, limit: int | None = None
    ) -> Output:
        """Rows `offset` on of an ended batch: one JSON page (`limit` up to 10,000, the
        default), or JSONL / CSV (to the end unless `limit`). Refused while it runs."""
        if offset < 0:
            raise InvalidRequestError("'offset' must be 0 or more.", param="offset")
        if limit is not None and limit < 1:
            raise InvalidRequestError("'limit' must be 1 or more.", param="limit")
        if fmt == "json":
            if limit is not None and limit > MAX_PAGE_ROWS:
                raise InvalidRequestError(
                    f"A JSON page holds at most {MAX_PAGE_ROWS} rows: page with 'offset', "
                    "or read the whole output as format=jsonl or csv.",
                    param="limit",
                )
            limit = limit or MAX_PAGE_ROWS
        batch = self._ended(project_id, batch_id)
        assert batch.operation is not None
        op = Operation.from_json(batch.operation["operation"])
        rows = self._rows(project_id, batch, op, offset, limit)
        if fmt == "jsonl":
            return Output("application/jsonl", operation_output.jsonl(rows))
        if fmt == "csv":
            columns = batch.operation.get("columns")
            if columns is None:  # submitted before specs recorded them
                columns = operation_output.item_columns(
                    self.files.open(project_id, batch.operation["items_file_id"])[1]
                )
            chunks = operation_output.csv_rows(op, columns, rows, header=True)
            return Output("text/csv", chunks, f"{batch_id}.csv")
        assert limit is not None
        total = batch.operation["items"]
        head = OutputPage(id=batch.id, status=STATES[batch.status], offset=offset, limit=limit, total=total, results=[])
        return Output("application/json", operation_output.json_page(head, rows))

    def _ended(self, project_id: str, batch_id: str) -> BatchRecord:
        batch = self.get(project_id, batch_id)
        if batch.status == BatchStatus.FAILED:
            raise ConflictError(
                f"Batch {batch_id} failed validation: {_errors(batch)}", param="batch_id", code="batch_failed"
            )
        if batch.status not in ENDED:
            raise ConflictError(
                f"Batch {batch_id} is {STATES[batch.status]}; its output is ready once it has ended.",
                param="batch_id",
                code="batch_not_finished",
            )
        return batch

    def _rows(
        self, project_id: str, batch: BatchRecord, op: Operation, offset: int, limit: int | None
    ) -> Iterator[OperationRow]:
        assert batch.operation is not None
        _, items = self.files.open(project_id, batch.operation["items_file_id"])
        results = [self.files.open(project_id, f)[1] for f in (batch.output_file_id, batch.error_file_id) if f]
        code = {BatchStatus.CANCELLED: "batch_cancelled", BatchStatus.EXPIRED: "batch_expired"}
        never_ran = {"code": code.get(batch.status, "missing"), "message": "The item never ran."}
        rows = operation_output.rows(op, items, results, offset, limit, never_ran)
        # the files are sought and the first row read now, while an error can still be the
        # answer, not once a 200 has started to stream (issue 11 #5)
        first = next(rows, None)
        return rows if first is None else itertools.chain([first], rows)


def status_of(batch: BatchRecord) -> OperationBatch:
    """An operation batch's status: counts of items, progress, usage."""
    assert batch.operation is not None
    op, total = batch.operation["operation"], batch.operation["items"]
    # a batch cancelled (or expired) before validation read its lines has none: its items
    # all end failed, as its output rows say
    failed = batch.failed + (total - batch.total if batch.status in (BatchStatus.CANCELLED, BatchStatus.EXPIRED) else 0)
    done = batch.completed + failed
    return OperationBatch(
        batch_id=batch.id,
        status=STATES[batch.status],
        total_items=total,
        completed_items=batch.completed,
        failed_items=failed,
        progress_percentage=round(100 * done / total, 1),
        operation=op.get("name") or op["kind"],
        model=op["model"],
        created_at=batch.created_at,
        usage=OperationUsage(input_tokens=batch.input_tokens, output_tokens=batch.output_tokens, cost=batch.cost),
        metadata=batch.metadata,
        error=_errors(batch) if batch.status == BatchStatus.FAILED else None,
        file_id=batch.operation.get("file_id"),
    )


def _errors(batch: BatchRecord) -> str:
    return "; ".join(e.message for e in batch.errors or [])


def _wrapped(records: Iterable[Record]) -> Iterator[Record]:
    """The records, a file's problem becoming a 400 naming the parameter."""
    try:
        yield from records
    except RecordsError as exc:
        raise InvalidRequestError(exc.message, param=exc.param) from None
