"""Reading an operation batch's rows back, from any offset, and writing them as a JSON
page, JSONL or CSV.

An ended operation batch has three files, each with one line per item in input order:
the items file (`{"index", "record"}`, written at submit), and the batch's output and
error files (OpenAI batch result lines, custom_id `item-0000000`, …, each item in exactly
one of them). Rows are the items file merged with the two result files.

A page at `offset` does not read the rows before it: each file is sorted by item index,
so a binary search over byte positions finds the first line of the page in O(log size)
small reads, and reading goes on from there. Page time is flat across a million-row
output (bench/output_pages.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import orjson

from batchgate.core.operation_runs import item_id, row
from batchgate.core.operations import Operation, result_fields
from batchgate.protocol.operations import OperationRow, OutputPage

PROBE_BYTES = 1 << 12
_NEW_ITEM_HEAD = b'{"index":'  # how item_line starts every line
_ITEM_INDEX = re.compile(rb'\{"index":(\d+)')
_RESULT_INDEX = re.compile(rb'"custom_id":"item-(\d+)"')
_HEAD_BYTES = 256  # a result line names its custom_id within this many bytes of its start

Key = Callable[[bytes], int]


def item_line(index: int, fields: dict[str, Any]) -> bytes:
    """The items file's line for one item: its index first, where `seek` reads it."""
    return orjson.dumps({"index": index, "record": fields}) + b"\n"


def item_key(head: bytes) -> int:
    found = _ITEM_INDEX.match(head)
    if found is None:
        raise ValueError(f"not an items file line: {head[:80]!r}")
    return int(found.group(1))


def result_key(head: bytes) -> int:
    found = _RESULT_INDEX.search(head, 0, _HEAD_BYTES)
    if found is None:
        raise ValueError(f"not an operation result line: {head[:80]!r}")
    return int(found.group(1))


def seek(stream: BinaryIO, key: Key, target: int) -> int:
    """Move `stream` to the first line whose key is at least `target` (the end if none),
    in a file of lines sorted by key; returns that byte offset.

    Binary search over byte positions: position p stands for the first line starting at
    or after p, so "that line's key >= target" is monotone in p. Each probe reads a few
    KB; a file of a billion bytes takes about 30 probes."""
    size = stream.seek(0, io.SEEK_END)
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) // 2
        found = _line_at(stream, mid, size)
        if found is None or key(found[1]) >= target:
            hi = mid
        else:
            lo = mid + 1
    found = _line_at(stream, lo, size)
    start = size if found is None else found[0]
    stream.seek(start)
    return start


def _line_at(stream: BinaryIO, position: int, size: int) -> tuple[int, bytes] | None:
    """(start, first bytes) of the first line starting at or after `position`, or None."""
    start = position
    if position > 0:
        # the line starts after the first newline at or after position - 1
        stream.seek(position - 1)
        while True:
            chunk = stream.read(PROBE_BYTES)
            if not chunk:
                return None
            newline = chunk.find(b"\n")
            if newline >= 0:
                start = stream.tell() - len(chunk) + newline + 1
                break
    if start >= size:
        return None
    stream.seek(start)
    return start, stream.read(_HEAD_BYTES)


class _Results:
    """Result lines from several files, each sorted by item index, taken in that order."""

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


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        if line.strip():
            yield line


def _items(stream: BinaryIO, offset: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, input fields) of the items from `offset` on.

    Items files written before each line began with its index (batches submitted before
    commit 3c547e5) hold `{"content", "metadata"}` lines, the line number being the index:
    there is nothing to seek by, so those are read from the start. Their fields are
    given as new ones are: the content and the metadata under their own names."""
    if stream.read(len(_NEW_ITEM_HEAD)) in (_NEW_ITEM_HEAD, b""):
        seek(stream, item_key, offset)
        for raw in _lines(stream):
            item = orjson.loads(raw)
            yield item["index"], item["record"]
        return
    stream.seek(0)
    for index, raw in enumerate(_lines(stream)):
        if index >= offset:
            yield index, _old_item_fields(orjson.loads(raw))


def _old_item_fields(item: dict[str, Any]) -> dict[str, Any]:
    # merged as protocol/records.json_record merges them: the content wins a clash
    fields = {"content": item["content"]}
    fields.update(item.get("metadata") or {})
    fields["content"] = item["content"]
    return fields


def item_columns(stream: BinaryIO) -> list[str]:
    """Every input field of an items file, in first-seen order (one read of the whole
    file): for batches submitted before their spec recorded its `columns`."""
    columns: dict[str, None] = {}
    with stream:
        for _, fields in _items(stream, 0):
            columns.update(dict.fromkeys(fields))
    return list(columns)


def rows(
    op: Operation,
    items: BinaryIO,
    results: list[BinaryIO],
    offset: int,
    limit: int | None,
    never_ran: dict[str, Any],
) -> Iterator[OperationRow]:
    """Rows `offset` to `offset + limit` (to the end without a limit), reading each file
    from the page's first line on. `never_ran` is the error of an item with no result
    line (its batch ended before its line was even read)."""
    try:
        page = _items(items, offset)
        for stream in results:
            seek(stream, result_key, offset)
        merged = _Results([_lines(stream) for stream in results])
        for count, (index, fields) in enumerate(page):
            if limit is not None and count >= limit:
                return
            entry = merged.take(item_id(index))
            response = entry.get("response") if entry is not None else None
            error = entry.get("error") if entry is not None else never_ran
            status = response.get("status_code") if response else None
            body = response.get("body") if response else None
            yield row(index, fields, op, status, body, error)
    finally:
        for stream in (items, *results):
            stream.close()


# --- formats ------------------------------------------------------------------------------


def json_page(head: OutputPage, page: Iterator[OperationRow]) -> Iterator[bytes]:
    """`head` with its `results` written row by row: a page streams, never whole in memory."""
    empty = head.model_dump_json().encode()
    assert empty.endswith(b'"results":[]}'), "results is the page's last field"
    yield empty[: -len(b"]}")]
    for i, r in enumerate(page):
        yield (b"," if i else b"") + r.model_dump_json().encode()
    yield b"]}"


def jsonl(page: Iterator[OperationRow]) -> Iterator[bytes]:
    for r in page:
        yield r.model_dump_json().encode() + b"\n"


def csv_columns(op: Operation, input_columns: list[str]) -> tuple[list[str], list[str]]:
    """(header, output fields) of the CSV output. The input columns come first, each under
    its own name; then `id`, `status`, `error` and the result's fields. An output column
    whose name an input column already has is written with a leading underscore (`_id`),
    more until the name is free: the caller's data is never overwritten or renamed."""
    taken = set(input_columns)
    header = list(input_columns)
    fields = ["id", "status", "error", *result_fields(op)]
    for name in fields:
        while name in taken:
            name = "_" + name
        taken.add(name)
        header.append(name)
    return header, fields


def csv_rows(op: Operation, input_columns: list[str], page: Iterator[OperationRow], header: bool) -> Iterator[bytes]:
    """The rows as CSV (with the header first when `header`): nested values as JSON; a
    result without fields (text, free JSON) in one `result` column."""
    names, fields = csv_columns(op, input_columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow([_cell(name) for name in names])  # input column names are the caller's too
    result_names = fields[3:]
    whole_result = result_names == ["result"]
    for r in page:
        if whole_result:
            results = [r.result]
        else:
            result = r.result if isinstance(r.result, dict) else {}
            results = [result.get(f) for f in result_names]
        cells = [*(r.metadata.get(c) for c in input_columns), r.id, r.status, r.error, *results]
        writer.writerow([_cell(value) for value in cells])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if header and buffer.tell():
        yield buffer.getvalue().encode()


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such a
# cell gets a leading ' (OWASP's advice), which spreadsheets show as text. A plain number
# (-5, +1.5e3) stays as it is: it is read as the number, never run.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text
