"""One test per validation rule: the error names the line and the field."""

from __future__ import annotations

import io
import json

import pytest
from support import chat_line, jsonl

from batchgate.core import validation
from batchgate.core.validation import ValidationLimits, iter_line_batches, validate_input

ENDPOINT = "/v1/chat/completions"


def run(data: bytes, limits: ValidationLimits | None = None) -> tuple[list[tuple[int, int, int]], list]:
    """Validate `data`; returns the line index as (line, offset, length) triples, and the errors."""
    index: list[int] = []
    result = validate_input(io.BytesIO(data), ENDPOINT, limits or ValidationLimits(), index.extend, chunk_rows=3)
    return [(index[i], index[i + 1], index[i + 2]) for i in range(0, len(index), 3)], result.errors


def custom_id(data: bytes, row: tuple[int, int, int]) -> str:
    return str(json.loads(data[row[1] : row[1] + row[2]])["custom_id"])


def test_valid_file_yields_every_line_with_offsets() -> None:
    data = jsonl([chat_line(f"r{i}") for i in range(10)])
    rows, errors = run(data)
    assert errors == []
    assert [line for line, _, _ in rows] == list(range(1, 11))
    assert [custom_id(data, r) for r in rows] == [f"r{i}" for i in range(10)]


def test_blank_lines_are_skipped_but_counted_for_line_numbers() -> None:
    data = jsonl([chat_line("a")]) + b"\n   \n" + jsonl([chat_line("b")])
    rows, errors = run(data)
    assert errors == []
    assert [(r[0], custom_id(data, r)) for r in rows] == [(1, "a"), (4, "b")]


def test_no_trailing_newline() -> None:
    data = jsonl([chat_line("a"), chat_line("b")]).rstrip(b"\n")
    rows, errors = run(data)
    assert errors == [] and [custom_id(data, r) for r in rows] == ["a", "b"]


@pytest.mark.parametrize(
    ("line", "code", "param", "fragment"),
    [
        (b"{not json", "invalid_json", None, "not valid JSON"),
        (b'{"custom_id": "x\xff"}', "invalid_encoding", None, "UTF-8"),
        (b"[1, 2]", "invalid_type", None, "JSON object, got array"),
        (jsonl([{"method": "POST", "url": ENDPOINT, "body": {"model": "m"}}]), "missing_required_parameter", "custom_id", "'custom_id'"),
        (jsonl([{"custom_id": "x", "url": ENDPOINT, "body": {"model": "m"}}]), "missing_required_parameter", "method", "'method'"),
        (jsonl([{"custom_id": "x", "method": "POST", "body": {"model": "m"}}]), "missing_required_parameter", "url", "'url'"),
        (jsonl([{"custom_id": "x", "method": "POST", "url": ENDPOINT}]), "missing_required_parameter", "body", "'body'"),
        (jsonl([{"custom_id": 7, "method": "POST", "url": ENDPOINT, "body": {"model": "m"}}]), "invalid_type", "custom_id", "non-empty string"),
        (jsonl([{"custom_id": "x", "method": "GET", "url": ENDPOINT, "body": {"model": "m"}}]), "invalid_method", "method", "'GET'"),
        (jsonl([{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}]), "invalid_url", "url", "/v1/embeddings"),
        (jsonl([{"custom_id": "x", "method": "POST", "url": ENDPOINT, "body": "text"}]), "invalid_type", "body", "got string"),
        (jsonl([{"custom_id": "x", "method": "POST", "url": ENDPOINT, "body": {"messages": []}}]), "missing_required_parameter", "body.model", "body.model"),
    ],
)  # fmt: skip
def test_each_rule_names_line_and_param(line: bytes, code: str, param: str | None, fragment: str) -> None:
    data = jsonl([chat_line("ok-1")]) + line.rstrip(b"\n") + b"\n" + jsonl([chat_line("ok-3")])
    _, errors = run(data)
    assert len(errors) == 1
    err = errors[0]
    assert (err.code, err.line, err.param) == (code, 2, param)
    assert err.message.startswith("Line 2: ")
    assert fragment in err.message


def test_duplicate_custom_id_names_the_second_line() -> None:
    _, errors = run(jsonl([chat_line("a"), chat_line("b"), chat_line("a")]))
    assert [(e.code, e.line, e.param) for e in errors] == [("duplicate_custom_id", 3, "custom_id")]


def test_empty_file() -> None:
    for data in (b"", b"\n\n"):
        _, errors = run(data)
        assert [(e.code, e.line) for e in errors] == [("empty_file", None)]


def test_too_many_lines() -> None:
    _, errors = run(jsonl([chat_line(f"r{i}") for i in range(6)]), ValidationLimits(max_lines=5))
    assert [(e.code, e.line) for e in errors] == [("too_many_lines", 6)]


def test_line_over_size_limit_is_reported_without_buffering_it() -> None:
    big = chat_line("big", content="x" * 5000)
    data = jsonl([chat_line("a"), big, chat_line("c")])
    _, errors = run(data, ValidationLimits(max_line_bytes=1000))
    assert [(e.code, e.line) for e in errors] == [("line_too_large", 2)]
    assert "over the limit of 1000" in errors[0].message


def test_oversize_line_spanning_read_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchgate.core.validation.READ_SIZE", 64)
    data = jsonl([chat_line("a"), chat_line("big", content="y" * 700), chat_line("c")])
    flat: list[tuple[int, bytes | int]] = []
    for offset, lines in iter_line_batches(io.BytesIO(data), max_line_bytes=300):
        for item in lines:
            flat.append((offset, item))
            offset += (item if isinstance(item, int) else len(item)) + 1
    pieces = data.split(b"\n")
    assert [isinstance(item, int) for _, item in flat] == [False, True, False]
    assert flat[1] == (len(pieces[0]) + 1, len(pieces[1]))  # the oversize line, as its length
    assert flat[2] == (len(pieces[0]) + len(pieces[1]) + 2, pieces[2])


def test_error_count_is_capped() -> None:
    data = b"nope\n" * 50
    _, errors = run(data, ValidationLimits(max_errors=7))
    assert len(errors) == 7
    assert [e.line for e in errors] == list(range(1, 8))


def test_no_rows_are_emitted_after_the_first_error() -> None:
    data = jsonl([chat_line("a"), {"bad": 1}, chat_line("c"), chat_line("d")])
    rows, errors = run(data)
    assert len(errors) == 1
    assert all(r[0] < 2 for r in rows)


def test_duplicates_across_chunks_are_merged_in_line_order_with_other_errors() -> None:
    rows = [chat_line("a"), b"{bad", chat_line("b"), chat_line("c"), chat_line("d"), chat_line("a"), chat_line("b")]
    _, errors = run(jsonl(rows))
    assert [(e.line, e.code) for e in errors] == [
        (2, "invalid_json"),
        (6, "duplicate_custom_id"),
        (7, "duplicate_custom_id"),
    ]
    assert "already used by line 1" in errors[1].message
    _, capped = run(jsonl(rows), ValidationLimits(max_errors=2))
    assert [(e.line, e.code) for e in capped] == [(2, "invalid_json"), (6, "duplicate_custom_id")]


def test_ids_whose_hashes_collide_are_not_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "hash", lambda _: 7, raising=False)  # every id hashes alike
    _, errors = run(jsonl([chat_line("a"), chat_line("b"), chat_line("c"), chat_line("b")]))
    assert [(e.line, e.code) for e in errors] == [(4, "duplicate_custom_id")]
    assert "already used by line 2" in errors[0].message
    _, errors = run(jsonl([chat_line("a"), chat_line("b")]))
    assert errors == []


@pytest.mark.parametrize("small", [validation._SMALL, 1], ids=["python-sort", "numpy-sort"])
def test_duplicates_are_found_by_either_sort(monkeypatch: pytest.MonkeyPatch, small: int) -> None:
    monkeypatch.setattr(validation, "_SMALL", small)
    rows = [chat_line(str(i)) for i in range(50)] + [chat_line("7"), chat_line("49"), chat_line("7")]
    _, errors = run(jsonl(rows))
    assert [(e.line, e.code) for e in errors] == [
        (51, "duplicate_custom_id"),
        (52, "duplicate_custom_id"),
        (53, "duplicate_custom_id"),
    ]
