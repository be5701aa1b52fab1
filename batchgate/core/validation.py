"""Streaming validation of a batch input file (JSONL of request lines).

One pass over the bytes, never holding the whole file: every line is parsed, checked
and turned into a `RequestLine` (its custom_id and where its bytes are), handed to
`sink` in chunks so the store can write them in batched transactions. Errors name the
line (1-based) and the field, in the shape of OpenAI's `errors.data[]`.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from batchgate.core.models import BatchError
from batchgate.core.prompts import PromptError

READ_SIZE = 1 << 20


@dataclass(slots=True)
class ValidationLimits:
    max_line_bytes: int = 8 << 20
    max_lines: int = 1_000_000
    max_errors: int = 100
    # the problem with a line's `body.model` (e.g. no route serves it), or None if it runs
    check_model: Callable[[str], str | None] | None = None
    # the models the batch's API key may use (None: any)
    allowed_models: frozenset[str] | None = None
    # the rendered body of a line that names a prompt template (raises PromptError)
    render_prompt: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(slots=True)
class ValidationResult:
    total: int = 0
    errors: list[BatchError] = field(default_factory=list)
    models: set[str] = field(default_factory=set)  # the distinct `body.model`s of the lines
    uses_prompts: bool = False  # some line names a prompt template


def iter_line_batches(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, list[bytes | int]]]:
    """Yield (offset of the first line, lines) per read of the stream.

    Lines are split on b"\n" (a trailing b"\r" stays in the line: JSON ignores it). A
    line over `max_line_bytes` is given as its length (an int) instead of its bytes, and
    is skipped without being buffered past the limit. Batching lines per read keeps the
    per-line work in C (`split`) rather than in a Python generator.
    """
    offset = 0  # file offset of the first byte of `carry`
    carry = b""
    skipping = -1  # bytes so far of an oversize line being skipped
    while chunk := stream.read(READ_SIZE):
        if skipping >= 0:
            newline = chunk.find(b"\n")
            if newline < 0:
                skipping += len(chunk)
                continue
            skipping += newline
            yield offset, [skipping]
            offset += skipping + 1
            chunk = chunk[newline + 1 :]
            skipping = -1
        data = carry + chunk if carry else chunk
        parts = data.split(b"\n")
        carry = parts.pop()
        if parts:
            lines: list[bytes | int] = (
                list(parts)
                if max(map(len, parts)) <= max_line_bytes
                else [p if len(p) <= max_line_bytes else len(p) for p in parts]
            )
            yield offset, lines
            offset += len(data) - len(carry)
        if len(carry) > max_line_bytes:
            skipping, carry = len(carry), b""
    if skipping >= 0:
        yield offset, [skipping]
    elif carry:
        yield offset, [carry if len(carry) <= max_line_bytes else len(carry)]


def iter_request_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes) of every non-blank line of a validated input file,
    numbered as validation numbers them (blank lines count)."""
    lineno = 0
    for offset, lines in iter_line_batches(stream, max_line_bytes):
        for raw in lines:
            lineno += 1
            size = raw if isinstance(raw, int) else len(raw)
            if not isinstance(raw, int) and raw and not raw.isspace():
                yield lineno, offset, raw
            offset += size + 1


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
    # duplicate custom_ids are found by their hashes: 8 bytes an id in a flat array
    # (a set of a million id strings was ~100 MB of the validation's peak memory), filled
    # per chunk at C speed and sorted once at the end; a second, exact pass then names the
    # lines of any hash that repeats (a real duplicate, or a rare collision it rules out)
    hashes = array("q")
    ids: list[str] = []
    # a batch names a handful of models: each is checked once, then looked up per line
    runnable: dict[str, bool] = {}

    def model_runs(model: str) -> bool:
        if model not in runnable:
            allowed = limits.allowed_models is None or model in limits.allowed_models
            runnable[model] = allowed and (limits.check_model is None or limits.check_model(model) is None)
        return runnable[model]

    def absorb_ids() -> None:
        hashes.extend(map(hash, ids))
        ids.clear()

    pending = array("q")
    append = pending.append
    lineno = 0
    loads = orjson.loads

    def error(code: str, message: str, param: str | None = None) -> None:
        errors.append(BatchError(code=code, message=f"Line {lineno}: {message}", line=lineno, param=param))

    max_errors, max_lines, total = limits.max_errors, limits.max_lines, 0
    for offset, lines in iter_line_batches(stream, limits.max_line_bytes):
        for raw in lines:
            lineno += 1
            start = offset
            if isinstance(raw, int):
                offset += raw + 1
                error("line_too_large", f"line is {raw} bytes, over the limit of {limits.max_line_bytes}.")
                if len(errors) >= max_errors:
                    break
                continue
            length = len(raw)
            offset += length + 1
            if not length or raw.isspace():
                continue  # blank lines (e.g. a trailing one) carry no request
            if total >= max_lines:
                error("too_many_lines", f"the file has more than {max_lines} request lines.")
                break
            total += 1
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError as exc:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    error("invalid_encoding", "line is not valid UTF-8.")
                else:
                    error("invalid_json", f"line is not valid JSON ({exc}).")
                if len(errors) >= max_errors:
                    break
                continue
            # the fast path checks a well-formed line in one expression; anything else goes
            # through _check_request, which finds and names the first problem
            try:
                custom_id, body = obj["custom_id"], obj["body"]
                ok = (
                    obj["method"] == "POST"
                    and obj["url"] == endpoint
                    and custom_id.__class__ is str
                    and custom_id != ""
                    and body.__class__ is dict
                    and body.get("model").__class__ is str
                    and body["model"] != ""
                    and (runnable.get(body["model"]) or model_runs(body["model"]))
                    and "prompt_slug" not in body
                )
            except (KeyError, TypeError):
                ok = False
            if not ok:
                line_body = obj.get("body") if type(obj) is dict else None
                if type(line_body) is dict and "prompt_slug" in line_body and limits.render_prompt is not None:
                    result.uses_prompts = True
                    try:  # check the line as it will run: rendered from its template
                        obj = {**obj, "body": limits.render_prompt(line_body)}
                    except PromptError as exc:
                        error(exc.code, exc.message, exc.param)
                        if len(errors) >= max_errors:
                            break
                        continue
                problem = _check_request(obj, endpoint, limits.check_model, limits.allowed_models)
                if problem is not None:
                    error(*problem)
                    if len(errors) >= max_errors:
                        break
                    continue
                custom_id = obj["custom_id"]
            ids.append(custom_id)
            if len(ids) >= chunk_rows:
                absorb_ids()
            if errors:
                continue
            append(lineno)
            append(start)
            append(length)
            if len(pending) >= 3 * chunk_rows:
                sink(pending)
                pending = array("q")
                append = pending.append
        else:
            continue
        break  # an inner break (error limit, too many lines) ends the whole scan
    result.total = total
    result.models = set(runnable)
    absorb_ids()
    repeated = _repeated(hashes)
    if repeated:
        stream.seek(0)
        errors += _find_duplicates(stream, limits.max_line_bytes, lineno, {e.line for e in errors}, repeated)
        errors.sort(key=lambda e: e.line or 0)
        del errors[max_errors:]
    if pending and not errors:
        sink(pending)
    if result.total == 0 and not errors:
        errors.append(
            BatchError(code="empty_file", message="The input file has no request lines.", param="input_file_id")
        )
    return result


# up to this many lines, duplicates are found with Python's sort (a list of ints: ~4 MB)
_SMALL = 100_000


def _repeated(hashes: array[int]) -> set[int]:
    """The values that occur more than once in `hashes` (which it sorts)."""
    if len(hashes) < 2:
        return set()
    if len(hashes) <= _SMALL:  # a list of a few Python ints costs less than numpy's import
        ordered = sorted(hashes)
        return {a for a, b in itertools.pairwise(ordered) if a == b}
    import numpy  # here, not at the top: only processes that validate a big file pay its ~20 MB

    in_place = numpy.frombuffer(hashes, dtype=numpy.int64)
    in_place.sort()  # in place: the hashes are not needed in their order any more
    return set(in_place[1:][in_place[1:] == in_place[:-1]].tolist())


def _find_duplicates(
    stream: BinaryIO, max_line_bytes: int, last_line: int, skip: set[int | None], repeated: set[int]
) -> list[BatchError]:
    """The exact pass: every line up to `last_line` (not in `skip`, the lines that already
    have an error) whose custom_id an earlier line used; only ids whose hash is in
    `repeated` can be such, so only those are remembered."""
    first_line: dict[str, int] = {}
    found: list[BatchError] = []
    for lineno, _, raw in iter_request_lines(stream, max_line_bytes):
        if lineno > last_line:
            break
        if lineno in skip:
            continue
        custom_id = orjson.loads(raw)["custom_id"]
        if hash(custom_id) not in repeated:
            continue
        if custom_id in first_line:
            message = f"Line {lineno}: custom_id {custom_id!r} is already used by line {first_line[custom_id]}."
            found.append(BatchError("duplicate_custom_id", message, lineno, "custom_id"))
        else:
            first_line[custom_id] = lineno
    return found


def _check_request(
    obj: object,
    endpoint: str,
    check_model: Callable[[str], str | None] | None = None,
    allowed_models: frozenset[str] | None = None,
) -> tuple[str, str, str | None] | None:
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
    if allowed_models is not None and model not in allowed_models:
        allowed = ", ".join(sorted(allowed_models)) or "none"
        return (
            "model_not_allowed",
            f"The batch's API key may not use the model {model!r} (allowed: {allowed}).",
            "body.model",
        )
    if check_model is not None and (problem := check_model(model)) is not None:
        return "model_not_found", problem, "body.model"
    return None
