"""Reading a local file of records into operation items, for chunked jobs.

The formats and their rules follow the server's `POST /api/files`: CSV with a header row
(the `content_column`, default `content`, is the item; the other columns its metadata),
JSONL (one string or object per line), a JSON array (loaded whole: use JSONL for files
that do not fit in memory), or text with one item per line. CSV, JSONL and text are read
line by line, so a job over a large file keeps only the current chunk in memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchgate.sdk.errors import BadRequestError

FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text"}

Item = str | dict[str, Any]


def detect_format(path: Path, explicit: str | None = None) -> str:
    fmt = explicit or FORMATS.get(path.suffix.lower())
    if fmt not in set(FORMATS.values()):
        raise BadRequestError(f"cannot tell the format of {path.name!r}; pass format= (csv, json, jsonl or text)")
    return fmt


def iter_items(path: Path, fmt: str | None = None, content_column: str | None = None) -> Iterator[Item]:
    """The file's items, in order: strings, or `{"content", "metadata"}` objects."""
    fmt = detect_format(path, fmt)
    with open(path, encoding="utf-8-sig", newline="" if fmt == "csv" else None) as f:
        if fmt == "text":
            yield from (line.rstrip("\r\n") for line in f if line.strip())
        elif fmt == "csv":
            yield from _csv_items(csv.DictReader(f), content_column or "content", path)
        elif fmt == "jsonl":
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield _json_item(_loads(line, f"{path.name} line {number}"), content_column, number)
        else:
            values = _loads(f.read(), path.name)
            if not isinstance(values, list):
                raise BadRequestError(f"{path.name}: a JSON file must hold an array of items")
            yield from (_json_item(v, content_column, n) for n, v in enumerate(values, 1))


def _csv_items(reader: csv.DictReader[str], column: str, path: Path) -> Iterator[Item]:
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise BadRequestError(
            f"{path.name} has no column {column!r} (columns: {reader.fieldnames})", param="content_column"
        )
    for row in reader:
        if None in row:
            raise BadRequestError(f"{path.name} row {reader.line_num}: more fields than the header")
        content = row.pop(column)
        yield {"content": content, "metadata": row}


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"{where} is not valid JSON: {exc}") from None


def _json_item(value: Any, content_column: str | None, number: int) -> Item:
    """A string is the item; an object has its content under `content_column` (default
    `content`), its other keys become metadata, and its own `metadata` object wins a clash."""
    if isinstance(value, str):
        return value
    column = content_column or "content"
    if not isinstance(value, dict) or column not in value:
        raise BadRequestError(
            f"item {number} is neither a string nor an object with {column!r}", param="content_column"
        )
    rest = dict(value)
    content = rest.pop(column)
    nested = rest.pop("metadata", None) or {}
    return {"content": content, "metadata": {**rest, **nested}}
