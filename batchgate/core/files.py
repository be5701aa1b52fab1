"""Files: uploads streamed to the blob store with a size cap, listing, content, deletion."""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType
from typing import BinaryIO

from batchgate.core.errors import (
    ConflictError,
    InsufficientStorageError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from batchgate.core.ids import new_id, now
from batchgate.core.metering import caller_key_id
from batchgate.core.models import FilePurpose, FileRecord
from batchgate.core.ports import BlobStore, BlobWriter, Page, Store
from batchgate.core.retention import expires_at

UPLOAD_PURPOSES = (FilePurpose.BATCH.value,)


class Upload:
    """An upload in progress: bytes go straight to the blob store, never all in memory.

    Use as a context manager; `commit()` registers the file, leaving without it discards.
    """

    def __init__(self, service: FileService, project_id: str):
        self._service = service
        self.file_id = new_id("file-")
        self.project_id = project_id
        self._stack = ExitStack()
        self._writer: BlobWriter | None = None

    def __enter__(self) -> Upload:
        self._writer = self._stack.enter_context(self._service.blobs.writer(self.file_id))
        return self

    def write(self, data: bytes) -> None:
        assert self._writer is not None, "use Upload as a context manager"
        limit = self._service.max_file_bytes
        if self._writer.size + len(data) > limit:
            raise PayloadTooLargeError(
                f"File is larger than the limit of {limit} bytes.",
                param="file",
                code="file_too_large",
            )
        self._writer.write(data)

    def commit(self, purpose: str | None, filename: str | None, expires_after: int | None = None) -> FileRecord:
        """Register the file. Multipart fields may come in any order, so the purpose is
        checked here, after the bytes; a bad one discards them. It expires `expires_after`
        seconds from now, or after the purpose's default retention (None: kept)."""
        assert self._writer is not None
        check_purpose(purpose)
        size = self._writer.size
        self._stack.close()  # the blob becomes visible before its row does
        created = now()
        seconds = expires_after if expires_after is not None else self._service.retention.get(str(purpose))
        record = FileRecord(
            id=self.file_id,
            project_id=self.project_id,
            purpose=str(purpose),
            filename=filename or "upload.jsonl",
            bytes=size,
            created_at=created,
            expires_at=expires_at(created, seconds),
            key_id=caller_key_id(),
        )
        try:
            self._service.store.add_file(record)
        except BaseException:
            self._service.blobs.delete(self.file_id)  # bytes without a row would never be freed
            raise
        return record

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)


class FileService:
    def __init__(self, store: Store, blobs: BlobStore, max_file_bytes: int, retention: dict[str, int] | None = None):
        self.store = store
        self.blobs = blobs
        self.max_file_bytes = max_file_bytes
        self.retention = retention or {}  # purpose -> seconds until an upload expires, by default

    def upload(self, project_id: str) -> Upload:
        return Upload(self, project_id)

    def get(self, project_id: str, file_id: str) -> FileRecord:
        record = self.store.get_file(file_id, project_id)
        if record is None:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id")
        return record

    def list(self, project_id: str, purpose: str | None, after: str | None, limit: int, order: str) -> Page[FileRecord]:
        if order not in ("asc", "desc"):
            raise InvalidRequestError("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
        check_limit(limit, 10_000)
        return self.store.list_files(project_id, purpose, after, limit, order)

    def open(self, project_id: str, file_id: str) -> tuple[FileRecord, BinaryIO]:
        record = self.get(project_id, file_id)
        return record, self.blobs.open(file_id)

    def delete(self, project_id: str, file_id: str) -> None:
        """Delete a file, unless a batch needs it (409 `file_in_use`): the input of a batch
        that has not ended, or any file of an operation batch (`BatchRecord.needs_file`)."""
        self.get(project_id, file_id)
        if self.store.file_in_use(file_id):
            raise _in_use(file_id)
        try:
            # the store checks again in the same step as the delete, so a batch created on
            # the file meanwhile keeps it (exactly one of the two wins)
            deleted = self.store.delete_file(file_id, project_id)
        except InsufficientStorageError:
            # on a full disk even deleting the row cannot be written: free the file's own
            # bytes first, then delete the row (a file left without content is deleted
            # on the next try)
            self.blobs.delete(file_id)
            deleted = self.store.delete_file(file_id, project_id)
        if deleted:
            self.blobs.delete(file_id)
            return
        self.get(project_id, file_id)  # deleted by another request meanwhile: 404
        raise _in_use(file_id)  # a batch needed it when the store went to delete it


def _in_use(file_id: str) -> ConflictError:
    return ConflictError(
        f"File {file_id} is needed by a batch: the input of one that has not ended, or a file an "
        "operation batch reads its output from. Cancel the batch or wait for it to end (an operation "
        "batch's files stay as long as it does).",
        param="file_id",
        code="file_in_use",
    )


def check_purpose(purpose: str | None) -> None:
    if not purpose:
        raise InvalidRequestError(
            "Missing required parameter 'purpose'.",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequestError(
            f"Invalid purpose {purpose!r}: uploads accept {', '.join(UPLOAD_PURPOSES)}.",
            param="purpose",
            code="invalid_value",
        )


def check_limit(limit: int, maximum: int) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidRequestError(f"'limit' must be between 1 and {maximum}.", param="limit", code="invalid_value")
