"""Objects the SDK returns, read with the server's own wire models (`batchgate.protocol.operations`).

- `Batch`: an operation batch's status (`OperationBatch`), with `.id`, `.progress`, `.done`.
- `CompletionResult`: the answer of a synchronous operation call; `.results` and `.model`.
- `OutputPage`: one JSON page of a batch's output; `.id`, `.status`, `.offset`, `.limit`,
  `.total`, `.results`.

Rows are plain dicts (`row["result"]["label"]`), validated against `OperationRow` on the
way in; result objects iterate over their rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchgate.protocol import operations as wire

TERMINAL_STATUSES = wire.TERMINAL_STATES
Row = dict[str, Any]


class Batch(wire.OperationBatch):
    """An operation batch as `/api/batches` reports it.

    `id` is `batch_id`; `progress` is `progress_percentage` (0–100); `done` is true once the
    batch has ended (completed, failed, expired or cancelled) and its output can be read.
    `file_id` is set on batches created from an uploaded file."""

    @property
    def id(self) -> str:
        return self.batch_id

    @property
    def progress(self) -> float:
        return self.progress_percentage

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class _Rows:
    results: list[Row]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Row:
        return self.results[index]


@dataclass(frozen=True)
class CompletionResult(_Rows):
    """The rows of a synchronous call, one per item in order, and the model that answered."""

    results: list[Row]
    model: str
    operation: str

    @classmethod
    def from_json(cls, content: bytes) -> CompletionResult:
        parsed = wire.CompletionResponse.model_validate_json(content)
        return cls([row.model_dump() for row in parsed.results], parsed.model, parsed.operation)


@dataclass(frozen=True)
class OutputPage(_Rows):
    """One page of an ended batch's rows: `results` are rows `offset` to `offset + len(results)`
    of `total`."""

    id: str
    status: str
    offset: int
    limit: int
    total: int
    results: list[Row]

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.results) < self.total

    @classmethod
    def from_json(cls, content: bytes) -> OutputPage:
        page = wire.OutputPage.model_validate_json(content)
        rows = [row.model_dump() for row in page.results]
        return cls(page.id, page.status, page.offset, page.limit, page.total, rows)
