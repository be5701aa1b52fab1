"""Extensions to the batch lifecycle: pause and resume a batch, and retry the failed lines
of a finished one as a new batch.

A pause is not a status (see core/states.py): a paused batch stays `validating` or
`in_progress`, with `paused_at` set. No worker claims its lines (those already running
finish and are recorded); its window keeps running, as OpenAI's `expires_at` is
absolute, so a batch paused past its window expires; it can be cancelled while paused.
"""

from __future__ import annotations

from batchgate.core.batches import BatchService
from batchgate.core.errors import ConflictError
from batchgate.core.files import FileService
from batchgate.core.models import BatchRecord, FilePurpose, FileRecord, RequestState
from batchgate.core.states import PAUSABLE_STATUSES, RETRYABLE_STATUSES

RETRY_OF = "retry_of"  # metadata of a retry: the batch whose failed lines it runs again
RETRIED_BY = "retried_by"  # metadata of a retried batch: its retry


class BatchLifecycle:
    def __init__(self, batches: BatchService, files: FileService):
        self.batches = batches
        self.files = files
        self.store = batches.store

    def pause(self, project_id: str, batch_id: str) -> BatchRecord:
        """Stop claiming the batch's lines (idempotent: pausing a paused batch is no change)."""
        batch = self.batches.get(project_id, batch_id)
        if not batch.paused and not self.store.pause_batch(batch_id, int(self.batches.clock.time())):
            batch = self.batches.get(project_id, batch_id)
            if not batch.paused:
                raise ConflictError(
                    f"Batch {batch_id} is {batch.status.value}; only a validating or in_progress batch can be paused.",
                    param="batch_id",
                    code="batch_not_pausable",
                )
        return self.batches.get(project_id, batch_id)

    def resume(self, project_id: str, batch_id: str) -> BatchRecord:
        """Let workers claim the batch's lines again (idempotent for a running batch)."""
        batch = self.batches.get(project_id, batch_id)
        if batch.status not in PAUSABLE_STATUSES:
            raise ConflictError(
                f"Batch {batch_id} is {batch.status.value}; only a validating or in_progress batch can be resumed.",
                param="batch_id",
                code="batch_not_resumable",
            )
        if self.store.resume_batch(batch_id):
            self.batches.on_change()
        return self.batches.get(project_id, batch_id)

    def retry(self, project_id: str, batch_id: str, completion_window: str | None = None) -> BatchRecord:
        """A new batch of the finished batch's lines that did not succeed (failed, and also
        expired or cancelled: every line of its error file), their input lines as they
        were, so the same custom_ids. Linked both ways in metadata: `retry_of` on the new
        batch (with the old one's other metadata), `retried_by` on the old one."""
        batch = self.batches.get(project_id, batch_id)
        if batch.status not in RETRYABLE_STATUSES:
            raise ConflictError(
                f"Batch {batch_id} is {batch.status.value}; only a finished batch can be retried.",
                param="batch_id",
                code="batch_not_finished",
            )
        if batch.source != "openai":
            raise ConflictError(
                f"Batch {batch_id} is a {batch.source} batch; only /v1/batches batches can be retried.",
                param="batch_id",
                code="batch_not_retryable",
            )
        if batch.metadata and RETRIED_BY in batch.metadata:
            raise ConflictError(
                f"Batch {batch_id} was already retried by {batch.metadata[RETRIED_BY]}.",
                param="batch_id",
                code="batch_already_retried",
            )
        if batch.failed == 0:
            raise ConflictError(
                f"Batch {batch_id} has no failed lines to retry.", param="batch_id", code="no_failed_lines"
            )
        if self.store.get_file(batch.input_file_id, project_id) is None:
            raise ConflictError(
                f"The input file {batch.input_file_id} of batch {batch_id} was deleted; its lines cannot be read.",
                param="batch_id",
                code="input_file_deleted",
            )
        retry_file = self._failed_lines_file(batch)
        metadata = {k: v for k, v in (batch.metadata or {}).items() if k not in (RETRY_OF, RETRIED_BY)}
        metadata = dict(list(metadata.items())[:15]) | {RETRY_OF: batch_id}
        retry = self.batches.create(
            project_id,
            retry_file.id,
            batch.endpoint,
            completion_window or batch.completion_window,
            metadata,
            output_expires_after=batch.output_expires_after,
        )
        if not self.store.link_retry(batch_id, retry.id):  # a concurrent retry won
            self.batches.cancel(project_id, retry.id)
            winner = (self.batches.get(project_id, batch_id).metadata or {}).get(RETRIED_BY)
            raise ConflictError(
                f"Batch {batch_id} was already retried by {winner}.", param="batch_id", code="batch_already_retried"
            )
        return retry

    def _failed_lines_file(self, batch: BatchRecord) -> FileRecord:
        """A new input file of the batch's lines that did not succeed, in input order."""
        with self.files.upload(batch.project_id) as upload, self.files.blobs.open(batch.input_file_id) as source:
            count = 0
            for row in self.store.iter_finished(batch.id):
                if row.state == RequestState.SUCCEEDED:
                    continue
                source.seek(row.offset)
                line = source.read(row.length).rstrip(b"\r\n")
                upload.write(line + b"\n")
                count += 1
            if count == 0:
                raise ConflictError(
                    f"Batch {batch.id} has no failed lines to retry.", param="batch_id", code="no_failed_lines"
                )
            return upload.commit(FilePurpose.BATCH.value, f"retry-of-{batch.id}.jsonl")
