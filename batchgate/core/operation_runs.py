"""Running an operation (label, summarize, extract, enrich, run, or a custom run) over
items synchronously, and the result row of one item, which batches share.

Every item is a `Record` (`protocol/records.py`): the fields the caller gave, and which one
is the content. The operation sees the content and the other fields (its metadata); the
result row gives every field back under its own name in `metadata`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from batchgate.core.errors import BackendError, BackendRejectedError, InvalidRequestError, PayloadTooLargeError
from batchgate.core.operations import Item, Operation, compile_request, interpret, parse_operation
from batchgate.core.ports import Backend, BackendRequest
from batchgate.protocol.operations import (
    OPERATIONS,
    CompletionRequest,
    CompletionResponse,
    OperationRow,
    RunRequest,
    canonical_operation,
)
from batchgate.protocol.records import Record, RecordsError, json_record

CHAT = "/v1/chat/completions"
ID_WIDTH = 7  # item-0000000 … item-9999999: sorts in input order up to 10M items


def item_id(index: int) -> str:
    return f"item-{index:0{ID_WIDTH}d}"


def records_of(items: list[dict[str, Any]], param: str = "items") -> list[Record]:
    """Request items (`{"content", "metadata"?, other keys}` objects) as records, by the
    same rules as the elements of an uploaded JSON file."""
    if not items:
        raise InvalidRequestError(f"'{param}' must be a non-empty array of items.", param=param)
    records = []
    for index, value in enumerate(items):
        where = f"{param}[{index}]"
        try:
            records.append(json_record(dict(value), where, param=f"{where}.content"))
        except RecordsError as exc:
            raise InvalidRequestError(exc.message, param=exc.param) from None
    return records


def item_of(record: Record) -> Item:
    return Item(record.content, record.metadata)


def row(
    index: int,
    fields: dict[str, Any],
    op: Operation,
    status_code: int | None,
    body: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> OperationRow:
    """The row of item `index` (its input `fields`) from its response or its error."""
    outcome = interpret(op, status_code, body, error)
    return OperationRow(
        index=index,
        id=item_id(index),
        operation=op.name,
        status="succeeded" if outcome.status == "succeeded" else "failed",
        result=outcome.result,
        error=outcome.error,
        model=outcome.model or op.model,
        metadata=fields,
        # what the model said on a row that failed, for a review queue
        raw=outcome.raw if outcome.status == "failed" else None,
    )


class OperationRuns:
    def __init__(
        self,
        backend: Backend,
        model_problem: Callable[[str], str | None],
        max_sync_items: int = 50,
        sync_concurrency: int = 16,
    ):
        self.backend = backend
        self.model_problem = model_problem
        self.max_sync_items = max_sync_items
        self.sync_concurrency = sync_concurrency

    def operation(self, name: str, params: dict[str, Any]) -> Operation:
        """The validated operation; an unknown model is a 400 naming 'model'."""
        op = parse_operation(name, params)
        if (problem := self.model_problem(op.model)) is not None:
            raise InvalidRequestError(problem, param="model", code="model_not_found")
        return op

    async def complete(self, endpoint: str, request: CompletionRequest) -> CompletionResponse:
        """A call to `POST /api/completions/{endpoint}`. Only `run` takes an `operation`,
        the name of a custom run; a built-in operation has its own endpoint."""
        name = request.operation if isinstance(request, RunRequest) else None
        if name is not None and canonical_operation(name) in OPERATIONS and name != "run":
            raise InvalidRequestError(
                f"{name!r} is a built-in operation: call POST /api/completions/{canonical_operation(name)}. "
                "The run endpoint's 'operation' names a custom run.",
                param="operation",
            )
        params = request.model_dump(exclude_none=True, by_alias=True, exclude={"items", "operation"})
        op = self.operation(name or endpoint, params)
        return await self.run(op, records_of([item.model_dump(exclude_unset=True) for item in request.items]))

    async def run(self, op: Operation, records: list[Record]) -> CompletionResponse:
        """Every item's row, in input order; one bad item never fails the call."""
        if len(records) > self.max_sync_items:
            raise PayloadTooLargeError(
                f"{len(records)} items is more than the {self.max_sync_items} a synchronous call takes; "
                "submit them as a batch with POST /api/batches (or upload a file to POST /api/files).",
                param="items",
                code="too_many_items",
            )
        bodies = [compile_request(op, item_of(r)) for r in records]  # a template error fails the call at once
        slots = asyncio.Semaphore(self.sync_concurrency)

        async def one(index: int, body: dict[str, Any]) -> OperationRow:
            fields = records[index].fields
            async with slots:
                try:
                    response = await self.backend.execute(BackendRequest(item_id(index), CHAT, body, interactive=True))
                except BackendRejectedError as exc:  # the backend's error answer: the row says why
                    response = exc.response
                except BackendError as exc:
                    return row(index, fields, op, None, None, {"code": exc.code, "message": exc.message})
            return row(index, fields, op, response.status_code, response.body, None)

        rows = list(await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies))))
        # the model that answered (a route may resolve an alias or "default"), else the one asked for
        model = next((r.model for r in rows if r.status == "succeeded" and r.model), op.model)
        return CompletionResponse(results=rows, model=model, operation=op.name)
