"""Claimed lines are read in spans: one read per run of neighbouring lines of a file."""

from __future__ import annotations

from typing import Any

import pytest

from batchgate.core import input_lines
from batchgate.core.input_lines import read_claimed_lines
from batchgate.core.models import ClaimedRequest
from batchgate.testing import MemoryBlobStore


class CountingBlobs(MemoryBlobStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, int, int]] = []
        self.broken: set[str] = set()

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        self.reads.append((blob_id, offset, length))
        if blob_id in self.broken:
            raise OSError("the object store is down")
        return super().read_range(blob_id, offset, length)


def put(blobs: CountingBlobs, file_id: str, lines: list[bytes]) -> list[tuple[int, int]]:
    """Store `lines` as one file; each line's (offset, length), newline excluded."""
    with blobs.writer(file_id) as w:
        w.write(b"\n".join(lines) + b"\n")
    spans, offset = [], 0
    for line in lines:
        spans.append((offset, len(line)))
        offset += len(line) + 1
    return spans


def claims(batch: str, file_id: str, spans: list[tuple[int, int]], which: list[int]) -> list[ClaimedRequest]:
    return [ClaimedRequest(batch, file_id, "/v1/chat/completions", i, *spans[i], attempts=1) for i in which]


@pytest.fixture
def blobs() -> CountingBlobs:
    return CountingBlobs()


def test_neighbouring_lines_are_one_read(blobs: CountingBlobs) -> None:
    lines = [f'{{"custom_id": "r-{i}"}}'.encode() for i in range(300)]
    spans = put(blobs, "file-a", lines)
    got = read_claimed_lines(blobs, claims("b1", "file-a", spans, list(range(10, 266))))
    assert len(blobs.reads) == 1
    assert got == {("b1", i): lines[i] for i in range(10, 266)}


def test_a_large_gap_or_span_starts_a_new_read(blobs: CountingBlobs, monkeypatch: Any) -> None:
    lines = [b"x" * 100 for _ in range(50)]
    spans = put(blobs, "file-a", lines)
    monkeypatch.setattr(input_lines, "MAX_GAP", 150)
    monkeypatch.setattr(input_lines, "MAX_SPAN", 1000)
    # 0-1 neighbours; 5 is 3 lines (303 bytes) after 1: a new read; 5..14 outgrow 1000 bytes at 14
    got = read_claimed_lines(blobs, claims("b1", "file-a", spans, [0, 1, *range(5, 15)]))
    assert got == {("b1", i): lines[i] for i in [0, 1, *range(5, 15)]}
    assert [(o, n) for _, o, n in blobs.reads] == [(0, 201), (505, 908), (1414, 100)]


def test_lines_of_several_files_and_batches(blobs: CountingBlobs) -> None:
    a = [b'{"a": %d}' % i for i in range(5)]
    b = [b'{"b": %d}' % i for i in range(5)]
    spans_a, spans_b = put(blobs, "file-a", a), put(blobs, "file-b", b)
    got = read_claimed_lines(blobs, claims("b1", "file-a", spans_a, [4, 0, 2]) + claims("b2", "file-b", spans_b, [1]))
    assert got == {("b1", 0): a[0], ("b1", 2): a[2], ("b1", 4): a[4], ("b2", 1): b[1]}
    assert len(blobs.reads) == 2


def test_an_unreadable_span_is_left_to_the_caller(blobs: CountingBlobs) -> None:
    spans_a = put(blobs, "file-a", [b"{}"] * 3)
    spans_b = put(blobs, "file-b", [b"{}"] * 3)
    blobs.broken.add("file-b")
    got = read_claimed_lines(blobs, claims("b1", "file-a", spans_a, [0, 1]) + claims("b2", "file-b", spans_b, [2]))
    assert set(got) == {("b1", 0), ("b1", 1)}
