"""Running operations (label, summarize, extract, enrich, run) over items: synchronously,
or as batches that are ordinary batches underneath.

An operation batch is compiled into two files: the items (`{"content", "metadata"}` per
line, for the output's metadata columns) and an ordinary OpenAI batch input file, one
`/v1/chat/completions` line per item with custom_id `item-0000000`, `item-0000001`, …
The batch then runs through the same state machine, worker, crash safety, cancel,
expiry, usage and cost as any other. Its output is read back in input order by merging
the items file with the batch's output and error files (both in line order, and the
zero-padded custom_ids sort in that order), so it streams at constant memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from batchgate.core.batches import BatchService
from batchgate.core.errors import BackendError, ConflictError, InvalidRequestError, PayloadTooLargeError
from batchgate.core.files import FileService
from batchgate.core.models import BatchRecord, BatchStatus, FilePurpose
from batchgate.core.operations import Item, Operation, compile_request, interpret, parse_operation
from batchgate.core.ports import Backend, BackendRequest

CHAT = "/v1/chat/completions"
ID_WIDTH = 7  # item-0000000 … item-9999999: sorts in input order up to 10M items
ENDED = (BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.EXPIRED)


def item_id(index: int) -> str:
    return f"item-{index:0{ID_WIDTH}d}"


def parse_items(items: object, param: str = "items") -> list[Item]:
    """Items from a request body: strings, or `{"content", "metadata"?}` objects."""
    if not isinstance(items, list) or not items:
        raise InvalidRequestError(f"'{param}' must be a non-empty array of items.", param=param)
    return [item_from(value, f"{param}[{i}]") for i, value in enumerate(items)]


def item_from(value: object, where: str) -> Item:
    if isinstance(value, str):
        value = {"content": value}
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{where} must be a string or an object with 'content'.", param=where)
    content, metadata = value.get("content"), value.get("metadata", {})
    if not isinstance(content, str) or not content:
        raise InvalidRequestError(f"{where}.content must be a non-empty string.", param=f"{where}.content")
    if not isinstance(metadata, dict):
        raise InvalidRequestError(f"{where}.metadata must be an object.", param=f"{where}.metadata")
    return Item(content, metadata)


class OperationRuns:
    def __init__(
        self,
        files: FileService,
        batches: BatchService,
        backend: Backend,
        model_problem: Callable[[str], str | None],
        max_sync_items: int = 50,
        sync_concurrency: int = 16,
    ):
        self.files = files
        self.batches = batches
        self.backend = backend
        self.model_problem = model_problem
        self.max_sync_items = max_sync_items
        self.sync_concurrency = sync_concurrency

    def operation(self, kind: str, params: dict[str, Any]) -> Operation:
        """The validated operation; an unknown model is a 400 naming 'model'."""
        op = parse_operation(kind, params)
        if (problem := self.model_problem(op.model)) is not None:
            raise InvalidRequestError(problem, param="model", code="model_not_found")
        return op

    # ---- synchronous ---------------------------------------------------------------

    async def run(self, op: Operation, items: list[Item]) -> list[dict[str, Any]]:
        """Every item's row, in input order; one bad item never fails the call."""
        if len(items) > self.max_sync_items:
            raise PayloadTooLargeError(
                f"{len(items)} items is more than the {self.max_sync_items} a synchronous call takes; "
                "submit them as a batch with POST /api/batches (or upload a file to POST /api/files).",
                param="items",
                code="too_many_items",
            )
        bodies = [compile_request(op, item) for item in items]  # a template error fails the call at once
        slots = asyncio.Semaphore(self.sync_concurrency)

        async def one(index: int, body: dict[str, Any]) -> dict[str, Any]:
            async with slots:
                try:
                    response = await self.backend.execute(BackendRequest(item_id(index), CHAT, body, interactive=True))
                except BackendError as exc:
                    return _row(index, items[index], op, None, None, {"code": exc.code, "message": exc.message})
            return _row(index, items[index], op, response.status_code, response.body, None)

        return list(await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies))))

    # ---- batches -------------------------------------------------------------------

    def submit(
        self,
        project_id: str,
        op: Operation,
        items: Iterable[Item],
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
    ) -> BatchRecord:
        """Compile the items into an ordinary batch (see the module doc) and create it.
        `items` may be a lazy stream (an uploaded file being parsed): nothing is held whole;
        an error while reading it discards both files."""
        count = 0
        with self.files.upload(project_id) as kept, self.files.upload(project_id) as requests:
            for index, item in enumerate(items):
                count += 1
                kept.write(orjson.dumps({"content": item.content, "metadata": item.metadata}) + b"\n")
                line = {"custom_id": item_id(index), "method": "POST", "url": CHAT, "body": compile_request(op, item)}
                requests.write(orjson.dumps(line) + b"\n")
            items_file = kept.commit(FilePurpose.BATCH.value, "items.jsonl")
            input_file = requests.commit(FilePurpose.BATCH.value, "requests.jsonl")
        if count == 0:
            raise InvalidRequestError("There are no items to run.", param="items")
        spec = {"operation": op.to_json(), "items_file_id": items_file.id, "items": count}
        return self.batches.create(project_id, input_file.id, CHAT, completion_window, metadata, operation=spec)

    def get(self, project_id: str, batch_id: str) -> BatchRecord:
        batch = self.batches.get(project_id, batch_id)
        if batch.operation is None:
            raise InvalidRequestError(
                f"Batch {batch_id} is not an operation batch; read it with GET /v1/batches/{batch_id}.",
                param="batch_id",
            )
        return batch

    def rows(self, project_id: str, batch_id: str) -> Iterator[dict[str, Any]]:
        """The batch's rows in input order. Not a generator itself: a batch that has not
        ended is refused now, before a streamed response has started."""
        batch = self.get(project_id, batch_id)
        if batch.status == BatchStatus.FAILED:
            errors = "; ".join(e.message for e in batch.errors or [])
            raise ConflictError(f"Batch {batch_id} failed validation: {errors}", param="batch_id", code="batch_failed")
        if batch.status not in ENDED:
            raise ConflictError(
                f"Batch {batch_id} is {batch.status.value}; its output is ready once it has ended.",
                param="batch_id",
                code="batch_not_finished",
            )
        return self._rows(project_id, batch)

    def _rows(self, project_id: str, batch: BatchRecord) -> Iterator[dict[str, Any]]:
        assert batch.operation is not None
        op = Operation.from_json(batch.operation["operation"])
        results = _Merged([self._lines(project_id, batch.output_file_id), self._lines(project_id, batch.error_file_id)])
        for index, raw in enumerate(self._lines(project_id, batch.operation["items_file_id"])):
            item = orjson.loads(raw)
            entry = results.take(item_id(index))
            response, error = (entry or {}).get("response"), (entry or {}).get("error")
            if entry is None:  # the batch ended before its lines were even read (cancelled early)
                code = {BatchStatus.CANCELLED: "batch_cancelled", BatchStatus.EXPIRED: "batch_expired"}
                error = {"code": code.get(batch.status, "missing"), "message": "The item never ran."}
            status = response.get("status_code") if response else None
            body = response.get("body") if response else None
            yield _row(index, Item(item["content"], item["metadata"]), op, status, body, error)

    def _lines(self, project_id: str, file_id: str | None) -> Iterator[bytes]:
        if file_id is None:
            return
        _, stream = self.files.open(project_id, file_id)
        with stream:
            for line in stream:
                if line.strip():
                    yield line


class _Merged:
    """Result lines from several files, each in custom_id order, taken in that order."""

    def __init__(self, streams: list[Iterator[bytes]]):
        self._streams = streams
        self._heads: list[dict[str, Any] | None] = [self._next(s) for s in streams]

    @staticmethod
    def _next(stream: Iterator[bytes]) -> dict[str, Any] | None:
        raw = next(stream, None)
        return orjson.loads(raw) if raw is not None else None

    def take(self, custom_id: str) -> dict[str, Any] | None:
        for i, head in enumerate(self._heads):
            if head is not None and head["custom_id"] == custom_id:
                self._heads[i] = self._next(self._streams[i])
                return head
        return None


def _row(
    index: int,
    item: Item,
    op: Operation,
    status_code: int | None,
    body: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    outcome = interpret(op, status_code, body, error)
    row: dict[str, Any] = {
        "index": index,
        "id": item_id(index),
        "status": outcome.status,
        "result": outcome.result,
        "error": outcome.error,
        "model": outcome.model or op.model,
        "metadata": item.metadata,
    }
    if outcome.status == "failed" and outcome.raw is not None:
        row["raw"] = outcome.raw  # what the model said, for a review queue
    return row
