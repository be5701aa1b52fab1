"""The input lines of a chunk of claimed requests, read in as few reads as possible.

A worker claims lines in chunks, and the lines of one chunk are mostly neighbours in
one input file. Reading each line on its own costs one round trip per line, which on
S3 (one ranged GET each) makes the object store, not the model, the bottleneck. So the
claimed lines are grouped by file and coalesced into spans (neighbours whose gap is
small), and each span is one read, sliced into its lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from batchgate.core.models import ClaimedRequest
from batchgate.core.ports import BlobStore

log = logging.getLogger(__name__)

MAX_GAP = 64 * 1024  # bytes of other lines worth reading through rather than a new read
MAX_SPAN = 8 * 1024 * 1024  # bytes one read may cover (memory per chunk stays bounded)

LineKey = tuple[str, int]  # (batch id, line number)


def read_claimed_lines(blobs: BlobStore, claims: Iterable[ClaimedRequest]) -> dict[LineKey, bytes]:
    """Each claim's line bytes, by (batch id, line). A span that cannot be read is left
    out (logged): its lines are read one by one by the caller, which reports the error."""
    by_file: dict[str, list[ClaimedRequest]] = {}
    for claim in claims:
        by_file.setdefault(claim.input_file_id, []).append(claim)
    lines: dict[LineKey, bytes] = {}
    for file_id, file_claims in by_file.items():
        for span in _spans(sorted(file_claims, key=lambda c: c.offset)):
            start = span[0].offset
            end = max(c.offset + c.length for c in span)
            try:
                data = blobs.read_range(file_id, start, end - start)
            except Exception:
                log.warning("file %s bytes %d-%d: read failed; reading its lines one by one", file_id, start, end)
                continue
            for c in span:
                lines[(c.batch_id, c.line)] = data[c.offset - start : c.offset - start + c.length]
    return lines


def _spans(claims: list[ClaimedRequest]) -> list[list[ClaimedRequest]]:
    """`claims` (sorted by offset) cut where the gap or the span grows too large."""
    spans: list[list[ClaimedRequest]] = []
    end = 0  # of the last span
    for claim in claims:
        if spans and claim.offset - end <= MAX_GAP and claim.offset + claim.length - spans[-1][0].offset <= MAX_SPAN:
            spans[-1].append(claim)
        else:
            spans.append([claim])
            end = 0
        end = max(end, claim.offset + claim.length)
    return spans
