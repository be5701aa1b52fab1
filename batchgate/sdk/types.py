"""Objects the SDK returns: `Batch`, an operation batch's status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class Batch:
    """An operation batch as `/api/batches` reports it.

    `progress` is the server's `progress_percentage` (0–100); `done` is true once the batch
    has ended (completed, failed, expired or cancelled) and its output can be read.
    `file_id` is set on batches created from an uploaded file. `raw` is the server's JSON.
    """

    id: str
    status: str
    operation: str | None = None
    model: str | None = None
    total_items: int = 0
    completed_items: int = 0
    failed_items: int = 0
    progress: float = 0.0
    created_at: int | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    file_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        return cls(
            id=data["batch_id"],
            status=data["status"],
            operation=data.get("operation"),
            model=data.get("model"),
            total_items=int(data.get("total_items") or 0),
            completed_items=int(data.get("completed_items") or 0),
            failed_items=int(data.get("failed_items") or 0),
            progress=float(data.get("progress_percentage") or 0.0),
            created_at=data.get("created_at"),
            usage=dict(data.get("usage") or {}),
            file_id=data.get("file_id"),
            raw=data,
        )
