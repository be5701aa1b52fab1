"""Streaming validation of a batch input file (JSONL of request lines).

One pass over the bytes, never holding the whole file: every line is parsed, checked
and turned into a `RequestLine` (its custom_id and where its bytes are), handed to
`sink` in chunks so the store can write them in batched transactions. Errors name the
line (1-based) and the field, in the shape of OpenAI's `errors.data[]`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from batchgate.core.models import BatchError

READ_SIZE = 1 << 20


@dataclass(slots=True)
class ValidationLimits:
    max_line_bytes: int = 8 << 20
    max_lines: int = 1_000_000
    max_errors: int = 100


@dataclass(slots=True)
class ValidationResult:
    total: int = 0
    errors: list[BatchError] = field(default_factory=list)


def iter_raw_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield (offset, length, bytes) per physical line; bytes is None for an oversize line.

    Lines are split on b"\\n"; a trailing b"\\r" is part of the line (JSON ignores it).
    An oversize line is skipped without being buffered past the limit.
    """
    offset = 0
    carry = b""
    skipping_from: int | None = None  # offset of an oversize line being skipped
    while chunk := stream.read(READ_SIZE):
        if skipping_from is not None:
            newline = chunk.find(b"\n")
            if newline < 0:
                offset += len(chunk)
                continue
            end = offset + newline
            yield skipping_from, end - skipping_from, None
            offset = end + 1
            chunk = chunk[newline + 1 :]
            skipping_from = None
        data = carry + chunk if carry else chunk
        parts = data.split(b"\n")
        carry = parts.pop()
        for part in parts:
            if len(part) > max_line_bytes:
                yield offset, len(part), None
            else:
                yield offset, len(part), part
            offset += len(part) + 1
        if len(carry) > max_line_bytes:
            skipping_from = offset
            offset += len(carry)
            carry = b""
    if skipping_from is not None:
        yield skipping_from, offset - skipping_from, None
    elif carry:
        yield offset, len(carry), carry if len(carry) <= max_line_bytes else None


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def validate_input(
    stream: BinaryIO,
    endpoint: str,
    limits: ValidationLimits,
    sink: Callable[[array[int]], None],
    chunk_rows: int = 20_000,
) -> ValidationResult:
    """Validate every line of `stream` for a batch on `endpoint`.

    Valid lines go to `sink` as a line index, in chunks: a flat `array("q")` of
    (line number, byte offset, byte length) triples. After the first error the batch is
    going to fail anyway, so the remaining lines are only checked (up to max_errors).
    """
    result = ValidationResult()
    errors = result.errors
    seen: set[str] = set()
    pending = array("q")
    append = pending.append
    lineno = 0
    loads = orjson.loads

    def error(code: str, message: str, param: str | None = None) -> None:
        errors.append(BatchError(code=code, message=f"Line {lineno}: {message}", line=lineno, param=param))

    for offset, length, raw in iter_raw_lines(stream, limits.max_line_bytes):
        lineno += 1
        if len(errors) >= limits.max_errors:
            break
        if raw is None:
            error("line_too_large", f"line is {length} bytes, over the limit of {limits.max_line_bytes}.")
            continue
        if not raw or raw.isspace():
            continue  # blank lines (e.g. a trailing one) carry no request
        if result.total >= limits.max_lines:
            error("too_many_lines", f"the file has more than {limits.max_lines} request lines.")
            break
        result.total += 1
        try:
            obj = loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                error("invalid_encoding", "line is not valid UTF-8.")
            else:
                error("invalid_json", f"line is not valid JSON ({exc}).")
            continue
        # the fast path checks a well-formed line in one expression; anything else goes
        # through _check_request, which finds and names the first problem
        try:
            custom_id, body = obj["custom_id"], obj["body"]
            ok = (
                obj["method"] == "POST"
                and obj["url"] == endpoint
                and type(custom_id) is str
                and custom_id != ""
                and type(body) is dict
                and type(body.get("model")) is str
                and body["model"] != ""
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            problem = _check_request(obj, endpoint)
            if problem is not None:
                error(*problem)
                continue
            custom_id = obj["custom_id"]
        before = len(seen)
        seen.add(custom_id)
        if len(seen) == before:
            error("duplicate_custom_id", f"custom_id {custom_id!r} is used by an earlier line.", "custom_id")
            continue
        if errors:
            continue
        append(lineno)
        append(offset)
        append(length)
        if len(pending) >= 3 * chunk_rows:
            sink(pending)
            pending = array("q")
            append = pending.append
    if pending and not errors:
        sink(pending)
    if result.total == 0 and not errors:
        errors.append(
            BatchError(code="empty_file", message="The input file has no request lines.", param="input_file_id")
        )
    return result


def _check_request(obj: object, endpoint: str) -> tuple[str, str, str | None] | None:
    """The first problem of one request object as (code, message, param), or None."""
    if type(obj) is not dict:
        return "invalid_type", f"each line must be a JSON object, got {_type_name(obj)}.", None
    for name in ("custom_id", "method", "url", "body"):
        if name not in obj:
            return "missing_required_parameter", f"missing required field '{name}'.", name
    custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
    if type(custom_id) is not str or not custom_id:
        return (
            "invalid_type",
            f"'custom_id' must be a non-empty string, got {_type_name(custom_id)}.",
            "custom_id",
        )
    if method != "POST":
        return "invalid_method", f"'method' must be \"POST\", got {method!r}.", "method"
    if url != endpoint:
        return "invalid_url", f"'url' is {url!r} but this batch's endpoint is {endpoint!r}.", "url"
    if type(body) is not dict:
        return "invalid_type", f"'body' must be a JSON object, got {_type_name(body)}.", "body"
    model = body.get("model")
    if model is None:
        return "missing_required_parameter", "missing required field 'body.model'.", "body.model"
    if type(model) is not str or not model:
        return (
            "invalid_type",
            f"'body.model' must be a non-empty string, got {_type_name(model)}.",
            "body.model",
        )
    return None
