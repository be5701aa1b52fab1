"""Streaming parsers that turn a file of records into operation items.

One implementation for both sides of the wire: the server parses uploads to
`POST /api/files` with it, and the SDK and CLI read local record files with it, so a file
means the same thing wherever it is read. Pure: it imports nothing else of batchgate.

`POST /api/files` takes CSV, a JSON array, JSONL or plain text of up to 100 MB and
1,000,000 items, so every parser reads the stream in chunks and yields one `Record` at
a time: memory stays bounded by the largest single record, never the file.

Errors are `RecordsError`s that name where the problem is, 1-based, in the
file's own terms: "row N" for CSV (the header is row 1, as a spreadsheet shows it),
"element N" for a JSON array, "line N" for JSONL and text; a byte offset where no
such position can be known. `param` is "content_column" when that choice is at fault,
else "file". The server answers them as 400s; the SDK raises them as `BadRequestError`s.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO

import orjson

FORMATS = ("csv", "json", "jsonl", "text")

READ_SIZE = 1 << 20
BOM = b"\xef\xbb\xbf"

_EXTENSIONS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
    ".text": "text",
}
_ACCEPTED = "csv, json, jsonl, text"


class RecordsError(ValueError):
    """A file of records (or an item) that cannot be read, with the parameter at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Record:
    """One item: every field as the caller gave it, in order, and the name of the one
    holding the text the operation works on.

    `fields` is what output rows give back (each column under its own name, the content
    column included); `metadata`, the other fields, is what prompt templates and enrich's
    `include_context` see. (`iter_fields` reads records without content: `column` "".)"""

    fields: dict[str, Any]
    column: str = "content"

    @property
    def content(self) -> str:
        content: str = self.fields[self.column]
        return content

    @property
    def metadata(self) -> dict[str, Any]:
        return {name: value for name, value in self.fields.items() if name != self.column}


def detect_format(filename: str | None, explicit: str | None = None) -> str:
    """The format of an upload: `explicit` if given, else the filename's extension.

    An empty `explicit` counts as not given, since HTML forms send empty fields.
    Matching is case-insensitive (`DATA.CSV` is CSV).
    """
    if explicit:
        fmt = explicit.strip().lower()
        if fmt not in FORMATS:
            raise RecordsError(f"format {explicit!r} is not supported; use one of {_ACCEPTED}", param="format")
        return fmt
    if not filename:
        raise RecordsError(
            f"the file has no name to tell its format by; pass format (one of {_ACCEPTED})", param="file"
        )
    by_extension = _EXTENSIONS.get(PurePosixPath(filename.replace("\\", "/")).suffix.lower())
    if by_extension is None:
        raise RecordsError(
            f"cannot tell the format of {filename!r} from its extension (.csv, .json, .jsonl or .ndjson, .txt); "
            f"rename it or pass format (one of {_ACCEPTED})",
            param="file",
        )
    return by_extension


def iter_records(
    stream: BinaryIO, fmt: str, content_column: str | None = None, max_items: int = 1_000_000
) -> Iterator[Record]:
    """Yield the file's records one at a time, reading `stream` only as far as needed.

    The arguments are checked at once (not on the first `next`), so a bad request fails
    before any byte is read. `content_column` names the CSV column or the JSON object key
    holding the content (default "content"); an empty one counts as not given. More than
    `max_items` records fail when the one past the limit is reached.
    """
    if fmt not in FORMATS:
        raise RecordsError(f"format {fmt!r} is not supported; use one of {_ACCEPTED}", param="format")
    content_column = content_column or None
    if fmt == "text":
        if content_column is not None:
            raise RecordsError(
                "content_column applies to csv, json and jsonl files; a text file has one item per line",
                param="content_column",
            )
        records = _text_records(stream)
    elif fmt == "csv":
        records = _csv_records(stream, content_column)
    else:
        key = content_column or "content"
        key_param = "content_column" if content_column else "file"

        def record(value: Any, where: str) -> Record:
            return json_record(value, where, key, key_param)

        records = (_json_records if fmt == "json" else _jsonl_records)(stream, record)
    return _limited(records, max_items)


def iter_fields(stream: BinaryIO, fmt: str, max_items: int = 1_000_000) -> Iterator[dict[str, Any]]:
    """Yield each record's fields, for records that have no content column (an agent task
    rendered from any of its fields): a CSV row by its header, a JSON or JSONL object as
    it is. Read, limited and reported like `iter_records`; a text file has no fields."""
    if fmt not in ("csv", "json", "jsonl"):
        raise RecordsError(f"format {fmt!r} has no fields; use csv, json or jsonl", param="format")
    if fmt == "csv":
        records = _csv_records(stream, None, with_content=False)
    else:
        records = (_json_records if fmt == "json" else _jsonl_records)(stream, _fields_record)
    return (record.fields for record in _limited(records, max_items))


def _fields_record(value: Any, where: str) -> Record:
    if type(value) is not dict:
        raise RecordsError(f"{where} must be an object, got {_json_type(value)}", param="file")
    return Record(value, "")


def _limited(records: Iterable[Record], max_items: int) -> Iterator[Record]:
    for count, record in enumerate(records, 1):
        if count > max_items:
            raise RecordsError(f"the file has more than {max_items:,} items", param="file")
        yield record


def _check_content(content: object, where: str, name: str, param: str) -> str:
    """The content as a non-empty string; whitespace alone is empty, since it gives a model nothing to work on."""
    if not isinstance(content, str):
        raise RecordsError(f"{where}: {name} must be a string, got {_json_type(content)}", param=param)
    if not content or content.isspace():
        raise RecordsError(f"{where}: {name} is empty", param=param)
    return content


# --- lines (csv, jsonl, text) ---------------------------------------------------------


def _line_blocks(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Yield (file offset, bytes) blocks of whole lines: each ends at b"\\n", the last at EOF.

    Working on ~1 MB blocks keeps splitting and decoding in C; cutting at line ends means a
    block never splits a UTF-8 sequence or a line. A leading UTF-8 BOM is dropped (the
    offsets still count it). A line longer than a read is gathered in a list, not by
    repeated concatenation, so even one huge line costs linear time.
    """
    offset = 0
    pending: list[bytes] = []
    first = True
    while chunk := stream.read(READ_SIZE):
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            pending.append(chunk)
            continue
        head = chunk if cut == len(chunk) else chunk[:cut]
        if pending:
            pending.append(head)
            head = b"".join(pending)
        pending = [chunk[cut:]] if cut < len(chunk) else []
        if first:
            first = False
            if head.startswith(BOM):
                head = head[3:]
                offset += 3
        yield offset, head
        offset += len(head)
    tail = b"".join(pending)
    if first and tail.startswith(BOM):
        tail = tail[3:]
        offset += 3
    if tail:
        yield offset, tail


def _text_records(stream: BinaryIO) -> Iterator[Record]:
    line_no = 0  # lines before the current block
    for offset, block in _line_blocks(stream):
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = line_no + block.count(b"\n", 0, exc.start) + 1
            raise _not_utf8(f"line {bad_line}", offset + exc.start) from None
        line_no += block.count(b"\n")
        lines = text.split("\n")
        if not lines[-1]:
            lines.pop()
        for line in lines:
            if line.endswith("\r"):
                line = line[:-1]
            if line and not line.isspace():
                yield Record({"content": line})


def _jsonl_records(stream: BinaryIO, record: Callable[[Any, str], Record]) -> Iterator[Record]:
    line_no = 0
    loads = orjson.loads
    for _, block in _line_blocks(stream):
        lines = block.split(b"\n")
        if not lines[-1]:
            lines.pop()
        for line in lines:
            line_no += 1
            if not line or line.isspace():
                continue
            try:
                value = loads(line)
            except orjson.JSONDecodeError as exc:
                raise _bad_json(f"line {line_no}", line, exc) from None
            yield record(value, f"line {line_no}")


class _NotUtf8(Exception):
    """Raised by `_csv_lines` through the csv reader, which then knows the row it was reading."""

    def __init__(self, offset: int):
        super().__init__(offset)
        self.offset = offset


def _csv_lines(stream: BinaryIO) -> Iterator[str]:
    """The file's text lines, ends kept (as `open(newline="")` gives them, which csv needs).

    Lines are split on \\r, \\n and \\r\\n only — not str.splitlines' \\u2028 and friends,
    which would end an unquoted field. On bad UTF-8 the good lines before it are yielded
    first, so the csv reader fails on exactly the row holding the bad byte.
    """
    for offset, block in _line_blocks(stream):
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            good = block.rfind(b"\n", 0, exc.start) + 1
            yield from io.StringIO(block[:good].decode("utf-8"), newline="")
            raise _NotUtf8(offset + exc.start) from None
        yield from io.StringIO(text, newline="")


def _csv_records(stream: BinaryIO, content_column: str | None, with_content: bool = True) -> Iterator[Record]:
    # strict: a stray quote or an unclosed one is an error, not a field silently
    # swallowing the rest of the file
    reader = csv.reader(_csv_lines(stream), strict=True)
    row_no = 0  # rows read so far: an error while reading names row_no + 1
    try:
        header = next(reader, None)
        if header is None:
            raise RecordsError("the file is empty; a CSV file needs a header row", param="file")
        row_no = 1
        if with_content:
            index = _content_index(header, content_column)
            column = header[index]
        else:
            _check_header(header)
            index, column = -1, ""
        width = len(header)
        for row in reader:
            row_no += 1
            if len(row) != width:
                if not row:  # a blank line
                    continue
                raise RecordsError(f"row {row_no} has {len(row)} fields, the header has {width}", param="file")
            if with_content and (not row[index] or row[index].isspace()):
                raise RecordsError(f"row {row_no}: the content column {column!r} is empty", param="file")
            yield Record(dict(zip(header, row, strict=True)), column)
    except _NotUtf8 as exc:
        raise _not_utf8(f"row {row_no + 1}", exc.offset) from None
    except csv.Error as exc:
        raise RecordsError(f"row {row_no + 1} is not valid CSV: {exc}", param="file") from None


def _check_header(header: list[str]) -> None:
    if not header:
        raise RecordsError("row 1 (the header) is empty", param="file")
    if len(set(header)) < len(header):
        twice = next(name for i, name in enumerate(header) if name in header[:i])
        raise RecordsError(f"the header names column {twice!r} twice", param="file")


def _content_index(header: list[str], content_column: str | None) -> int:
    _check_header(header)
    seen = set(header)
    columns = ", ".join(repr(name) for name in header)
    if content_column is None:
        if "content" not in seen:
            raise RecordsError(
                f"the file has no 'content' column; set content_column to the column holding the content "
                f"(columns: {columns})",
                param="content_column",
            )
        return header.index("content")
    if content_column not in seen:
        raise RecordsError(
            f"content_column {content_column!r} is not a column of the file (columns: {columns})",
            param="content_column",
        )
    return header.index(content_column)


# --- JSON ----------------------------------------------------------------------------


def _json_records(stream: BinaryIO, record: Callable[[Any, str], Record]) -> Iterator[Record]:
    loads = orjson.loads
    for number, offset, raw in _ArraySplitter(stream).elements():
        try:
            value = loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad_json(f"element {number} (byte {offset})", bytes(raw), exc) from None
        yield record(value, f"element {number}")


_MISSING = object()


def json_record(value: Any, where: str, key: str = "content", key_param: str = "file", param: str = "file") -> Record:
    """A record from one JSON value (an element of a file, or an item of a request body):
    a string is the content; an object has it under `key`.

    The object's other keys are its fields, then its "metadata" object is merged over
    them: the explicit metadata is the more deliberate statement, so it wins a clash (with
    every key but the content itself). `where` names the value in messages ("line 3",
    "items[2]"); `key_param` is blamed for a missing content key, `param` for the rest.
    """
    if type(value) is str:
        return Record({key: _check_content(value, where, "the string", param)}, key)
    if type(value) is not dict:
        raise RecordsError(f"{where} must be a string or an object with {key!r}, got {_json_type(value)}", param=param)
    content = value.get(key, _MISSING)
    if content is _MISSING:
        raise RecordsError(f"{where} has no {key!r} key", param=key_param)
    content = _check_content(content, where, repr(key), param)
    nested = value.pop("metadata", None)
    if nested is not None:
        if type(nested) is not dict:
            raise RecordsError(f"{where}: 'metadata' must be an object, got {_json_type(nested)}", param=param)
        value.update(nested)
        value[key] = content
    return Record(value, key)


# Element boundaries in a top-level array, found by a regex in C for the common shapes:
# a string, a scalar, or objects/arrays nested up to _FAST_DEPTH deep. Brackets are only
# counted, not paired ('{' may close with ']'), which keeps the pattern linear in the
# depth; orjson rejects a mismatch in the element. Possessive quantifiers keep a failed
# match linear too. A miss (deeper nesting, or an element running past the buffer) falls
# back to the byte-level scanner in `_ArraySplitter._scan`.
_FAST_DEPTH = 6
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_PLAIN = rb'[^"\[\]{}]++'
_SCALAR = rb'[^"\[\]{},]*+'


def _nested(depth: int) -> bytes:
    """A pattern for an object or array holding strings, scalars and containers up to `depth` deep."""
    inner = _STR + rb"|" + _nested(depth - 1) + rb"|" + _PLAIN if depth > 1 else _STR + rb"|" + _PLAIN
    return rb"[\[{](?:" + inner + rb")*+[\]}]"


_ELEMENT = re.compile(
    rb"\s*+((?>" + _STR + rb"|" + _nested(_FAST_DEPTH) + rb"|" + _SCALAR + rb"))\s*+([,\]])", re.DOTALL
)
_TOP_EVENT = re.compile(rb'["\[\]{},]')
_NESTED_EVENT = re.compile(rb'["\[\]{}]')
_STRING_EVENT = re.compile(rb'["\\]')
_NON_WS = re.compile(rb"[^ \t\r\n]")
_QUOTE, _CLOSE_ARRAY, _CLOSE_OBJECT = b'"]}'
_OPENERS = b"[{"


class _ArraySplitter:
    """Splits a top-level JSON array into its elements' bytes without parsing the whole.

    Reads the stream in chunks into one bytearray; consumed bytes are dropped only when
    more are read, so the buffer holds at most a chunk plus the element in progress.
    Brackets are only counted, not matched: orjson checks each element's own syntax.
    """

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.buf = bytearray()
        self.base = 0  # file offset of buf[0]
        self.eof = False

    def _more(self, keep: int) -> int:
        """Drop buf[:keep] and append the next chunk; returns the shift (keep), or -1 at EOF."""
        if self.eof:
            return -1
        chunk = self.stream.read(READ_SIZE)
        if keep:
            del self.buf[:keep]
            self.base += keep
        if not chunk:
            self.eof = True
            return -1
        self.buf += chunk
        return keep

    def _error(self, message: str) -> RecordsError:
        return RecordsError(message, param="file")

    def elements(self) -> Iterator[tuple[int, int, bytearray]]:
        """Yield (element number, file offset, bytes) per element, 1-based."""
        pos = self._open()
        number = 0
        buf = self.buf
        match = _ELEMENT.match
        while True:
            number += 1
            found = match(buf, pos)
            if found is not None:
                start, end = found.span(1)
                pos = found.end()
                closing = buf[pos - 1] == _CLOSE_ARRAY
            else:
                start, end, closing = self._scan(pos, number)
                pos = end + 1
                first = _NON_WS.search(buf, start, end)  # the scan starts at any whitespace before
                start = end if first is None else first.start()
            if start == end:
                if closing and number == 1:
                    break  # []
                where = "before ']'" if closing else f"at byte {self.base + end}"
                raise self._error(f"element {number} is missing: a stray comma {where}")
            yield number, self.base + start, buf[start:end]
            if closing:
                break
        self._close(pos)

    def _open(self) -> int:
        """Position just after the array's '['."""
        while len(self.buf) < len(BOM) and self._more(0) >= 0:
            pass  # reads may be short: gather enough to see a BOM
        pos = len(BOM) if self.buf.startswith(BOM) else 0
        while (found := _NON_WS.search(self.buf, pos)) is None:
            if self._more(len(self.buf)) < 0:
                raise self._error("the file is empty; expected a JSON array")
            pos = 0
        pos = found.start()
        first = self.buf[pos]
        if first != ord("["):
            hint = " (one JSON value per line is the jsonl format)" if first == ord("{") else ""
            raise self._error(
                f"the file is not a JSON array: it starts with {chr(first)!r} at byte {self.base + pos}{hint}"
            )
        return pos + 1

    def _scan(self, start: int, number: int) -> tuple[int, int, bool]:
        """(start, end, closes the array) of the element at `start`, byte by structural byte.

        The slow path: one Python step per bracket, quote and escape, reading more as
        needed. Positions are of `self.buf` after any reads it made.
        """
        buf = self.buf
        depth = 0
        i = start
        while True:
            found = (_NESTED_EVENT if depth else _TOP_EVENT).search(buf, i)
            if found is None:
                i = len(buf)
                shift = self._more(start)
                if shift < 0:
                    raise self._error(f"the JSON array is not closed: the file ends inside element {number}")
                start, i = 0, i - shift
                continue
            char = buf[found.start()]
            i = found.end()
            if char == _QUOTE:
                start, i = self._skip_string(start, i, number)
            elif char in _OPENERS:
                depth += 1
            elif depth:
                depth -= 1
            elif char == _CLOSE_OBJECT:
                raise self._error(f"element {number} is not valid JSON: unexpected '}}' at byte {self.base + i - 1}")
            else:
                return start, i - 1, char == _CLOSE_ARRAY

    def _skip_string(self, start: int, i: int, number: int) -> tuple[int, int]:
        """(start, position after the closing quote) of the string whose body begins at `i`."""
        buf = self.buf
        while True:
            found = _STRING_EVENT.search(buf, i)
            if found is not None:
                j = found.start()
                if buf[j] == _QUOTE:
                    return start, j + 1
                if j + 1 < len(buf):
                    i = j + 2
                    continue
                i = j  # an escape cut by the chunk's end: read on and look again
            else:
                i = len(buf)
            shift = self._more(start)
            if shift < 0:
                raise self._error(f"the JSON array is not closed: the file ends inside a string in element {number}")
            start, i = 0, i - shift

    def _close(self, pos: int) -> None:
        """Only whitespace may follow the array's ']'."""
        while True:
            found = _NON_WS.search(self.buf, pos)
            if found is not None:
                raise self._error(f"unexpected data after the JSON array at byte {self.base + found.start()}")
            if self._more(len(self.buf)) < 0:
                return
            pos = 0


# --- helpers -------------------------------------------------------------------------


def _not_utf8(where: str, offset: int) -> RecordsError:
    return RecordsError(f"{where} is not valid UTF-8 (byte {offset}); the file must be UTF-8 encoded", param="file")


def _bad_json(where: str, raw: bytes, exc: orjson.JSONDecodeError) -> RecordsError:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return RecordsError(f"{where} is not valid UTF-8; the file must be UTF-8 encoded", param="file")
    return RecordsError(f"{where} is not valid JSON: {exc}", param="file")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
