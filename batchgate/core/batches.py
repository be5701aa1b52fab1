"""Creating, reading, listing and cancelling batches (the synchronous side of the lifecycle).

The asynchronous side, validation, running and finalization, is the worker's
(`core/worker.py`, `core/jobs.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchgate.core.clock import Clock, SystemClock
from batchgate.core.errors import ConflictError, InvalidRequestError, NotFoundError
from batchgate.core.files import check_limit
from batchgate.core.ids import new_id
from batchgate.core.metering import caller_key_id
from batchgate.core.models import BATCH_ENDPOINTS, BatchRecord, BatchStatus, FilePurpose, is_batch_endpoint
from batchgate.core.ports import Page, Store
from batchgate.core.windows import parse_completion_window

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


class BatchService:
    def __init__(
        self,
        store: Store,
        on_change: Callable[[], None] | None = None,
        clock: Clock | None = None,
        output_retention: int | None = None,
        upstream_endpoints: bool = False,
    ):
        self.store = store
        self.output_retention = output_retention  # seconds the result files are kept by default
        # whether batches may name other endpoints, served by upstreams (the config has one)
        self.upstream_endpoints = upstream_endpoints
        # called after a batch is created or cancelled, so an in-process worker can act
        # at once instead of at its next poll
        self.on_change = on_change or (lambda: None)
        self.clock = clock or SystemClock()  # the worker's: a batch expires by the time it reads

    def create(
        self,
        project_id: str,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
        operation: dict[str, Any] | None = None,
        source: str | None = None,
        output_expires_after: int | None = None,
    ) -> BatchRecord:
        """Accept a batch: it starts `validating`, and the worker takes it from there.
        `operation`: the operation an operation batch was compiled from (kept for its output).
        `output_expires_after`: seconds its result files are kept (default: `output_retention`)."""
        if endpoint not in BATCH_ENDPOINTS and not (self.upstream_endpoints and is_batch_endpoint(endpoint)):
            upstreams = (
                "or another /v1/... endpoint of an upstream the lines' models route to"
                if self.upstream_endpoints
                else "(other endpoints need an upstream in the routing config)"
            )
            raise InvalidRequestError(
                f"Unsupported endpoint {endpoint!r}; batches accept {', '.join(BATCH_ENDPOINTS)} {upstreams}.",
                param="endpoint",
                code="invalid_value",
            )
        window = parse_completion_window(completion_window)
        check_metadata(metadata)
        file = self.store.get_file(input_file_id, project_id)
        if file is None:
            raise NotFoundError(f"No such File object: {input_file_id}", param="input_file_id")
        if file.purpose != FilePurpose.BATCH:
            raise InvalidRequestError(
                f"File {input_file_id} has purpose {file.purpose!r}; a batch input file must "
                "be uploaded with purpose 'batch'.",
                param="input_file_id",
                code="invalid_file_purpose",
            )
        created = int(self.clock.time())
        batch = BatchRecord(
            id=new_id("batch_"),
            project_id=project_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status=BatchStatus.VALIDATING,
            created_at=created,
            expires_at=created + window,
            metadata=metadata or None,
            source=source or ("operation" if operation else "openai"),
            operation=operation,
            output_expires_after=output_expires_after if output_expires_after is not None else self.output_retention,
            key_id=caller_key_id(),
        )
        if not self.store.add_batch(batch):  # its file was deleted since it was read above
            raise NotFoundError(f"No such File object: {input_file_id}", param="input_file_id")
        self.on_change()
        return batch

    def get(self, project_id: str, batch_id: str) -> BatchRecord:
        batch = self.store.get_batch(batch_id, project_id)
        if batch is None:
            raise NotFoundError(f"No such Batch object: {batch_id}", param="batch_id")
        return batch

    def list(self, project_id: str, after: str | None, limit: int, source: str | None = None) -> Page[BatchRecord]:
        """The project's batches, newest first; with `source` ("openai", "operation"), only those."""
        check_limit(limit, 100)
        return self.store.list_batches(project_id, after, limit, source)

    def cancel(self, project_id: str, batch_id: str) -> BatchRecord:
        """Ask for a cancel: the batch goes `cancelling`, the worker settles it `cancelled`.

        Results already produced are kept; unfinished lines go to the error file.
        """
        batch = self.get(project_id, batch_id)
        if batch.status == BatchStatus.CANCELLING:
            return batch
        if not self.store.request_cancel(batch_id, int(self.clock.time())):
            batch = self.get(project_id, batch_id)
            if batch.status != BatchStatus.CANCELLING:
                raise ConflictError(
                    f"Batch {batch_id} is {batch.status.value} and can no longer be cancelled.",
                    param="batch_id",
                    code="batch_not_cancellable",
                )
        self.on_change()
        return self.get(project_id, batch_id)


def check_metadata(metadata: object) -> None:
    """OpenAI's metadata rules: at most 16 string pairs, keys ≤ 64 and values ≤ 512 chars."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidRequestError(
            "'metadata' must be an object of string pairs.", param="metadata", code="invalid_type"
        )
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequestError(
            f"'metadata' has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
            param="metadata",
            code="invalid_value",
        )
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"metadata[{key!r}] must be a string.", param=f"metadata.{key}", code="invalid_type"
            )
        if len(key) > MAX_METADATA_KEY:
            raise InvalidRequestError(
                f"metadata key {key[:20]!r}… is longer than {MAX_METADATA_KEY} characters.",
                param="metadata",
                code="invalid_value",
            )
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidRequestError(
                f"metadata[{key!r}] is longer than {MAX_METADATA_VALUE} characters.",
                param=f"metadata.{key}",
                code="invalid_value",
            )
