"""Record file parsers (`protocol/records.py`, shared by the server, the SDK and the CLI):
each format's records, each error naming its place and param, every field kept in order
under its own name, and the streaming promise: bounded memory, and the first record
before the whole file."""

from __future__ import annotations

import io
import json
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from batchgate.protocol.records import (
    READ_SIZE,
    Record,
    RecordsError,
    detect_format,
    iter_fields,
    iter_records,
    json_record,
)


class Trickle(io.RawIOBase):
    """Returns at most `size` bytes per read, so every chunk boundary a parser must survive
    (mid-string, mid-escape, mid-BOM, mid-UTF-8 sequence) is exercised."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size, self.pos = data, size, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        k = self.size if n is None or n < 0 else min(n, self.size)
        out = self.data[self.pos : self.pos + k]
        self.pos += len(out)
        return out


class Generated(io.RawIOBase):
    """A stream built on demand from `pieces`, never whole in memory; counts the bytes read,
    and fails a reader that goes past `limit` (so a parser reading an endless stream whole
    fails the test instead of hanging it)."""

    def __init__(self, pieces: Iterator[bytes], limit: int | None = None):
        self.pieces, self.pending, self.bytes_read, self.limit = pieces, b"", 0, limit

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        size = READ_SIZE if n is None or n < 0 else n
        out = [self.pending]
        have = len(self.pending)
        while have < size:
            piece = next(self.pieces, b"")
            if not piece:
                break
            out.append(piece)
            have += len(piece)
        data = b"".join(out)
        self.pending = data[size:]
        self.bytes_read += min(size, len(data))
        assert self.limit is None or self.bytes_read <= self.limit, f"read {self.bytes_read:,} bytes"
        return data[:size]


def parse(data: bytes, fmt: str, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(r.content, r.metadata) for r in iter_records(io.BytesIO(data), fmt, **kwargs)]


def error(data: bytes, fmt: str, **kwargs: Any) -> RecordsError:
    with pytest.raises(RecordsError) as info:
        parse(data, fmt, **kwargs)
    return info.value


# --- detect_format -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("leads.csv", "csv"),
        ("LEADS.CSV", "csv"),
        ("items.json", "json"),
        ("items.jsonl", "jsonl"),
        ("items.ndjson", "jsonl"),
        ("notes.txt", "text"),
        ("notes.text", "text"),
        ("dir.v2/a.b.csv", "csv"),
        ("C:\\Users\\me\\items.jsonl", "jsonl"),
    ],
)
def test_detect_format_by_extension(filename: str, fmt: str) -> None:
    assert detect_format(filename) == fmt


def test_detect_format_explicit_wins_over_extension() -> None:
    assert detect_format("items.csv", "jsonl") == "jsonl"
    assert detect_format(None, " JSON ") == "json"
    assert detect_format("items.csv", "") == "csv"  # an empty form field is no choice


def test_detect_format_rejects_an_unknown_explicit_format() -> None:
    with pytest.raises(RecordsError) as info:
        detect_format("items.csv", "xlsx")
    assert info.value.param == "format"
    assert "'xlsx'" in info.value.message and "csv, json, jsonl, text" in info.value.message


@pytest.mark.parametrize("filename", ["book.xlsx", "README", None, ""])
def test_detect_format_without_a_known_extension_names_the_file_and_the_formats(filename: str | None) -> None:
    with pytest.raises(RecordsError) as info:
        detect_format(filename)
    assert info.value.param == "file"
    assert "csv, json, jsonl, text" in info.value.message
    if filename:
        assert repr(filename) in info.value.message


def test_iter_records_checks_its_arguments_before_reading() -> None:
    stream = Generated(iter([b"never read"]))
    with pytest.raises(RecordsError) as info:
        iter_records(stream, "xml")
    assert info.value.param == "format"
    with pytest.raises(RecordsError) as info:
        iter_records(stream, "text", content_column="body")
    assert info.value.param == "content_column"
    assert stream.bytes_read == 0


# --- csv -----------------------------------------------------------------------------


def test_csv_other_columns_become_string_metadata_and_empty_values_are_kept() -> None:
    data = b"id,content,score,note\n1,great product,5,\n2,broke in a week,1,refund\n"
    assert parse(data, "csv") == [
        ("great product", {"id": "1", "score": "5", "note": ""}),
        ("broke in a week", {"id": "2", "score": "1", "note": "refund"}),
    ]


def test_a_record_keeps_every_field_in_order_under_its_own_name() -> None:
    """Output rows give back `fields`: a CSV row is its header, the content column included."""
    (record,) = iter_records(io.BytesIO(b"id,review,city\nL-7,great,Oslo\n"), "csv", content_column="review")
    assert (record.fields, record.column) == ({"id": "L-7", "review": "great", "city": "Oslo"}, "review")
    assert list(record.fields) == ["id", "review", "city"]
    line = b'{"body": "text", "id": 3, "metadata": {"id": 4, "body": "not the content"}}\n'
    (obj,) = iter_records(io.BytesIO(line), "jsonl", content_column="body")
    assert obj.fields == {"body": "text", "id": 4} and obj.content == "text"
    (text,) = iter_records(io.BytesIO(b"a line\n"), "text")
    assert text.fields == {"content": "a line"}


def test_iter_fields_reads_records_without_a_content_column() -> None:
    """Agent tasks render any fields: no content column is needed, and objects stay whole."""
    assert list(iter_fields(io.BytesIO(b"name,notes\nAnn,\n"), "csv")) == [{"name": "Ann", "notes": ""}]
    assert list(iter_fields(io.BytesIO(b'[{"a": 1, "metadata": {"b": 2}}]'), "json")) == [
        {"a": 1, "metadata": {"b": 2}}
    ]
    with pytest.raises(RecordsError) as string:
        list(iter_fields(io.BytesIO(b'{"a": 1}\n"text"\n'), "jsonl"))
    assert "line 2 must be an object" in string.value.message
    with pytest.raises(RecordsError) as text:
        iter_fields(io.BytesIO(b"x\n"), "text")
    assert text.value.param == "format"


def test_json_record_reads_request_items_with_the_same_rules() -> None:
    item = json_record({"content": "hi", "lead": 7, "metadata": {"lead": 8}}, "items[0]", param="items[0].content")
    assert (item.content, item.metadata, item.fields) == ("hi", {"lead": 8}, {"content": "hi", "lead": 8})
    with pytest.raises(RecordsError) as empty:
        json_record({"content": " "}, "items[3]", param="items[3].content")
    assert empty.value.param == "items[3].content" and "items[3]" in empty.value.message


def test_csv_content_column_names_the_content() -> None:
    data = b"review,content\nnice,kept as metadata\n"
    assert parse(data, "csv", content_column="review") == [("nice", {"content": "kept as metadata"})]


def test_csv_quoted_fields_keep_newlines_commas_and_quotes() -> None:
    data = b'content,tag\r\n"line one\r\nline two, with a comma","say ""hi"""\r\nplain,x\r\n'
    assert parse(data, "csv") == [
        ("line one\r\nline two, with a comma", {"tag": 'say "hi"'}),
        ("plain", {"tag": "x"}),
    ]


def test_csv_keeps_unicode_line_separators_inside_unquoted_fields() -> None:
    data = "content,tag\nfirst\u2028still first,a\n".encode()
    assert parse(data, "csv") == [("first\u2028still first", {"tag": "a"})]


def test_csv_strips_a_bom_and_skips_blank_lines() -> None:
    data = b"\xef\xbb\xbfcontent,lang\n\nbonjour,fr\n\nhola,es"
    assert parse(data, "csv") == [("bonjour", {"lang": "fr"}), ("hola", {"lang": "es"})]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_csv_survives_any_read_size(size: int) -> None:
    data = '\ufeffcontent,meta\n"multi\nline é",😀\nnext,"a,b"\n'.encode()
    got = [(r.content, r.metadata) for r in iter_records(Trickle(data, size), "csv")]
    assert got == [("multi\nline é", {"meta": "😀"}), ("next", {"meta": "a,b"})]


def test_csv_without_a_content_column_lists_the_columns() -> None:
    err = error(b"id,text\n1,hello\n", "csv")
    assert err.param == "content_column"
    assert "'content'" in err.message and "'id', 'text'" in err.message


def test_csv_unknown_content_column_lists_the_columns() -> None:
    err = error(b"id,text\n1,hello\n", "csv", content_column="body")
    assert err.param == "content_column"
    assert "'body'" in err.message and "'id', 'text'" in err.message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"content,a\nx,1\ny,2,3\n", "row 3 has 3 fields, the header has 2"),
        (b"content,a\nx,1\ny\n", "row 3 has 1 fields, the header has 2"),
        (b'content,a\n"multi\nline",1\nz\n', "row 3 has 1 fields, the header has 2"),
        (b"content,a\n\nx,1\ny,2,3\n", "row 4 has 3 fields"),  # a blank line is a row too
    ],
)
def test_csv_ragged_row_names_the_row(data: bytes, message: str) -> None:
    err = error(data, "csv")
    assert message in err.message
    assert err.param == "file"


@pytest.mark.parametrize("empty", [b"", b"   "])
def test_csv_empty_content_names_the_row(empty: bytes) -> None:
    err = error(b"content,a\nx,1\n" + empty + b",2\n", "csv")
    assert "row 3" in err.message and "'content'" in err.message and "empty" in err.message
    assert err.param == "file"


def test_csv_bad_utf8_names_the_row_and_the_byte() -> None:
    data = b"content,a\nx,1\ncaf\xe9,2\ny,3\n"
    err = error(data, "csv")
    assert "row 3" in err.message and f"byte {data.index(0xE9)}" in err.message
    assert "UTF-8" in err.message and err.param == "file"


def test_csv_bad_utf8_far_into_the_file_names_its_row() -> None:
    rows = [b"content,n"] + [b"item %d,%d" % (i, i) for i in range(200_000)]  # > 2 read chunks
    rows[150_000] = b"item \xff,1"
    data = b"\n".join(rows) + b"\n"
    assert len(data) > 2 * READ_SIZE
    assert "row 150001 is not valid UTF-8" in error(data, "csv").message


def test_csv_bad_utf8_inside_a_multiline_field_names_the_row() -> None:
    err = error(b'content,a\nx,1\n"first line\nsecond \xc3(",2\n', "csv")
    assert "row 3 is not valid UTF-8" in err.message


def test_csv_bad_utf8_in_the_header_is_row_1() -> None:
    assert "row 1 is not valid UTF-8 (byte 0)" in error("content\nx\n".encode("utf-16"), "csv").message


@pytest.mark.parametrize(
    ("data", "row"),
    [(b'content,a\nx,1\n"never closed,2\ny,3\n', "row 3"), (b'content,a\n"ab"cd,1\n', "row 2")],
)
def test_csv_broken_quoting_names_the_row(data: bytes, row: str) -> None:
    err = error(data, "csv")
    assert row in err.message and "not valid CSV" in err.message and err.param == "file"


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"\nx\n", "row 1 (the header) is empty"), (b"content,a,a\nx,1,2\n", "column 'a' twice")],
)
def test_csv_header_problems(data: bytes, message: str) -> None:
    err = error(data, "csv")
    assert message in err.message and err.param == "file"


# --- json ----------------------------------------------------------------------------


def test_json_strings_and_objects_with_metadata() -> None:
    items = [
        "just text",
        {"content": "with metadata", "metadata": {"id": 7, "tags": ["a"]}},
        {"content": "extra keys", "source": "web", "metadata": {"source": "explicit wins"}, "n": None},
    ]
    assert parse(json.dumps(items).encode(), "json") == [
        ("just text", {}),
        ("with metadata", {"id": 7, "tags": ["a"]}),
        ("extra keys", {"source": "explicit wins", "n": None}),
    ]


def test_json_content_column_names_the_key() -> None:
    data = json.dumps([{"body": "the text", "content": "other"}, "a string is still content"]).encode()
    assert parse(data, "json", content_column="body") == [
        ("the text", {"content": "other"}),
        ("a string is still content", {}),
    ]


def test_json_empty_array_and_bom() -> None:
    assert parse(b" [ \n ] \n", "json") == []
    assert parse(b'\xef\xbb\xbf["x"]', "json") == [("x", {})]


TRICKY: list[Any] = [
    'quote " and backslash \\ and \\" together',
    "\\",
    {"content": "brackets ]}[{ and commas ,,, in a string", "metadata": {"k": [1, {"z": [[[2]]]}]}},
    {"content": "deep", "a": [[[[[[{"b": "]"}]]]]]], "s": "é😀"},
    {"content": "\u2028 \n \t escapes", "x": {"y": {"z": {"w": 1}}}},
]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_json_splitter_survives_every_read_size(indent: int | None, ascii_only: bool) -> None:
    data = json.dumps(TRICKY, indent=indent, ensure_ascii=ascii_only).encode()
    expected = parse(data, "json")
    assert [content for content, _ in expected] == [t if isinstance(t, str) else t["content"] for t in TRICKY]
    for size in range(1, 13):
        assert [(r.content, r.metadata) for r in iter_records(Trickle(data, size), "json")] == expected


def random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(6 if depth < 9 else 3)
    if kind == 0:
        return "".join(rng.choice('ab ,:[]{}"\\\n/é😀') for _ in range(rng.randrange(8)))
    if kind == 1:
        return rng.choice([0, -1.5e3, 12345678901234, True, False, None])
    if kind == 2:
        return "x"
    if kind == 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randrange(4))}


def test_json_splitter_agrees_with_a_whole_file_parse_on_random_documents() -> None:
    """Fast path (regex) and slow path (byte scanner, forced by tiny reads and deep nesting)
    must find the same element boundaries as parsing the whole array at once."""
    rng = random.Random(5)
    for _ in range(60):
        items = [
            f"item {i} {random_value(rng, 9)}"
            if rng.random() < 0.3
            else {"content": f"item {i}", "v": random_value(rng, 0)}
            for i in range(rng.randrange(1, 6))
        ]
        data = json.dumps(items, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode()
        expected = [(item, {}) if isinstance(item, str) else (item.pop("content"), item) for item in json.loads(data)]
        for size in (1, 7, 64, len(data)):
            assert [(r.content, r.metadata) for r in iter_records(Trickle(data, size), "json")] == expected


def test_json_large_elements_span_read_chunks() -> None:
    items = [{"content": "x" * (READ_SIZE + 17), "metadata": {"i": i, "esc": '"\\' * 1000}} for i in range(3)]
    got = parse(json.dumps(items).encode(), "json")
    assert [m["i"] for _, m in got] == [0, 1, 2]
    assert all(len(c) == READ_SIZE + 17 for c, _ in got)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (b'{"content": "x"}', "not a JSON array: it starts with '{' at byte 0 (one JSON value per line is the jsonl"),
        (b'"x"', "not a JSON array"),
        (b'["a", {"content": "b",}]', "element 2 (byte 6) is not valid JSON"),
        (b'["a", [1, 2]]', "element 2 must be a string or an object with 'content', got an array"),
        (b'["a", 3]', "element 2 must be a string or an object with 'content', got a number"),
        (b'["a", null]', "element 2 must be a string or an object with 'content', got null"),
        (b'["a", {"text": "b"}]', "element 2 has no 'content' key"),
        (b'[{"content": 5}]', "element 1: 'content' must be a string, got a number"),
        (b'[{"content": "  "}]', "element 1: 'content' is empty"),
        (b'["a", ""]', "element 2: the string is empty"),
        (b'[{"content": "a", "metadata": [1]}]', "element 1: 'metadata' must be an object, got an array"),
        (b'["a",]', "element 2 is missing: a stray comma before ']'"),
        (b'["a",,"b"]', "element 2 is missing: a stray comma at byte 5"),
        (b'[,"a"]', "element 1 is missing: a stray comma at byte 1"),
        (b'["a", "b"', "not closed: the file ends inside element 2"),
        (b'["a", "b', "not closed: the file ends inside a string in element 2"),
        (b'["a"] ["b"]', "unexpected data after the JSON array at byte 6"),
        (b'["a", {"content": "b"]}]', "element 2 is not valid JSON: unexpected '}' at byte 22"),
        (b'["a", "caf\xe9"]', "element 2 (byte 6) is not valid UTF-8"),
    ],
)
def test_json_errors_name_the_element_or_byte(data: bytes, message: str) -> None:
    err = error(data, "json")
    assert message in err.message
    assert err.param == "file"


def test_json_missing_content_column_key_blames_content_column() -> None:
    err = error(b'[{"body": "a"}, {"content": "b"}]', "json", content_column="body")
    assert "element 2 has no 'body' key" in err.message
    assert err.param == "content_column"


# --- jsonl ---------------------------------------------------------------------------


def test_jsonl_values_per_line_blank_lines_skipped() -> None:
    data = b'\xef\xbb\xbf"plain"\r\n\n   \n{"content": "obj", "metadata": {"id": 1}, "lang": "en"}\n{"content": "last"}'
    assert parse(data, "jsonl") == [("plain", {}), ("obj", {"lang": "en", "id": 1}), ("last", {})]


@pytest.mark.parametrize("size", [1, 3, 8])
def test_jsonl_survives_any_read_size(size: int) -> None:
    data = "\n".join(json.dumps(t, ensure_ascii=False) for t in TRICKY).encode()
    assert [r.content for r in iter_records(Trickle(data, size), "jsonl")] == [
        t if isinstance(t, str) else t["content"] for t in TRICKY
    ]


@pytest.mark.parametrize(
    ("data", "message", "param", "kwargs"),
    [
        (b'"a"\n\n{"content": \n', "line 3 is not valid JSON", "file", {}),
        (b'"a"\n[1]\n', "line 2 must be a string or an object with 'content', got an array", "file", {}),
        (b'"a"\n{"x": 1}\n', "line 2 has no 'content' key", "file", {}),
        (b'"a"\n{"x": 1}\n', "line 2 has no 'body' key", "content_column", {"content_column": "body"}),
        (b'"a"\n\n{"content": ""}\n', "line 3: 'content' is empty", "file", {}),
        (b'"a"\n"caf\xe9"\n', "line 2 is not valid UTF-8", "file", {}),
    ],
)
def test_jsonl_errors_name_the_line(data: bytes, message: str, param: str, kwargs: dict[str, Any]) -> None:
    err = error(data, "jsonl", **kwargs)
    assert message in err.message
    assert err.param == param


# --- text ----------------------------------------------------------------------------


def test_text_one_item_per_non_blank_line() -> None:
    data = b"\xef\xbb\xbffirst line\r\n\r\n  \n  second, indented  \nlast without newline"
    assert parse(data, "text") == [("first line", {}), ("  second, indented  ", {}), ("last without newline", {})]


def test_text_bad_utf8_names_the_line() -> None:
    err = error(b"ok\n\nalso ok\nbad \xff here\n", "text")
    assert "line 4 is not valid UTF-8 (byte 16)" in err.message
    assert err.param == "file"


@pytest.mark.parametrize("size", [1, 2, 5])
def test_text_survives_any_read_size(size: int) -> None:
    data = "\ufeffé one\n😀 two\r\n".encode()
    assert [r.content for r in iter_records(Trickle(data, size), "text")] == ["é one", "😀 two"]


# --- limits and streaming ------------------------------------------------------------

THREE = {
    "csv": b"content\na\nb\nc\n",
    "json": b'["a", "b", "c"]',
    "jsonl": b'"a"\n"b"\n"c"\n',
    "text": b"a\nb\nc\n",
}


@pytest.mark.parametrize("fmt", sorted(THREE))
def test_more_than_max_items_is_an_error(fmt: str) -> None:
    assert len(parse(THREE[fmt], fmt, max_items=3)) == 3
    records = iter_records(io.BytesIO(THREE[fmt]), fmt, max_items=2)
    assert [next(records).content, next(records).content] == ["a", "b"]
    with pytest.raises(RecordsError) as info:
        next(records)
    assert "more than 2 items" in info.value.message
    assert info.value.param == "file"


def endless(fmt: str) -> Iterator[bytes]:
    """An unbounded file of `fmt`: a parser that read it whole would never return."""
    yield {"csv": b"id,content\n", "json": b"[", "jsonl": b"\n", "text": b"\n"}[fmt]
    n = 0
    while True:
        n += 1
        line = b"record %d " % n + b"x" * 100
        yield {
            "csv": b'%d,"%s"\n' % (n, line),
            "json": b'{"content": "%s", "metadata": {"n": %d}},\n' % (line, n),
            "jsonl": b'{"content": "%s"}\n' % line,
            "text": line + b"\n",
        }[fmt]


@pytest.mark.parametrize("fmt", sorted(THREE))
def test_first_record_comes_before_the_stream_is_read_through(fmt: str) -> None:
    stream = Generated(endless(fmt), limit=32 * READ_SIZE)
    records = iter_records(stream, fmt)
    assert next(records).content.startswith("record 1 ")
    assert stream.bytes_read <= READ_SIZE
    for _ in range(20_000):  # ~3 MB further on, still reading one chunk at a time
        next(records)
    assert stream.bytes_read <= 5 * READ_SIZE


def test_a_50_mb_json_array_parses_in_bounded_memory() -> None:
    content = b"y" * 5000  # few, large elements: the test measures buffering, not per-element speed
    count = 10_000

    def pieces() -> Iterator[bytes]:
        yield b"["
        for i in range(count):
            yield b'%s{"content": "%d %s", "metadata": {"i": %d, "tags": ["a", "b"]}}' % (
                b"," if i else b"",
                i,
                content,
                i,
            )
        yield b"]"

    stream = Generated(pieces())
    tracemalloc.start()
    try:
        seen = 0
        for record in iter_records(stream, "json"):
            seen += 1
            assert isinstance(record, Record)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert stream.bytes_read > 50_000_000
    assert peak < 8_000_000, f"peak {peak:,} bytes for a {stream.bytes_read:,}-byte file"
