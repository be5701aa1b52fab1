"""Native batch passthrough: a batch whose every line routes to `batch = "native"` models
of one upstream runs on that upstream's own Files + Batches API instead of line by line.

The batch's "native" job, run by whichever worker claims it (idempotent, like every job):
  1. submit: upload the lines (each `model` rewritten to the upstream's name, custom_ids
     kept) and create the upstream batch, tagged with this batch's id in its metadata;
     its id is stored before anything else happens, so a restarted worker polls it
     rather than submitting again (and one that crashed between creating and storing
     finds it by the tag);
  2. poll: mirror the upstream's counts into the batch, and look again in `poll_interval`;
  3. import: once the upstream batch ends, download its output and error files and write
     one row per line (custom_id -> line); a line the upstream left without a result
     fails with the upstream's status. The batch then finalizes as any other.
A cancel or an expiry cancels the upstream batch, waits for it to wind down, imports the
partial results, and settles the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from batchgate.core.clock import Clock, SystemClock
from batchgate.core.errors import BackendError
from batchgate.core.ids import IdSequence
from batchgate.core.models import BatchJob, BatchRecord, RequestResult, RequestState
from batchgate.core.ports import BlobStore, Store, UpstreamBatch, UpstreamBatches
from batchgate.core.routing import RoutingConfig
from batchgate.core.states import TERMINAL_STATUSES
from batchgate.core.validation import iter_request_lines

log = logging.getLogger("batchgate.passthrough")

# an upstream speaks the same OpenAI statuses (strings, equal to our StrEnum members)
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
CHUNK = 5000  # rows per import transaction


@dataclass(slots=True)
class _Line:
    line: int
    offset: int
    length: int
    model: str


class Passthrough:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        routing: RoutingConfig,
        clients: Callable[[str], UpstreamBatches],
        max_line_bytes: int,
        poll_interval: int = 5,
        cancel_wait: int = 600,
        clock: Clock | None = None,
    ):
        self.store = store
        self.blobs = blobs
        self.routing = routing
        self.clients = clients
        self.max_line_bytes = max_line_bytes
        self.poll_interval = poll_interval
        self.cancel_wait = cancel_wait  # how long a cancel waits for the upstream to wind down
        self._ids = IdSequence("native-")
        self.clock = clock or SystemClock()

    def _now(self) -> int:
        return int(self.clock.time())

    def advance(self, job: BatchJob) -> int | None:
        """One step of a running passed-through batch; a time to look again, or None."""
        batch = job.batch
        assert batch.upstream is not None
        client = self.clients(batch.upstream)
        if batch.upstream_batch_id is None:
            metadata = {"batchgate_batch_id": batch.id}
            upstream_id = client.find(metadata) or client.submit(self._upstream_lines(batch), batch.endpoint, metadata)
            self.store.set_upstream_batch(batch.id, job.owner, upstream_id)
            log.info("batch %s passed through to %s as %s", batch.id, batch.upstream, upstream_id)
            return self._now() + self.poll_interval
        state = client.retrieve(batch.upstream_batch_id)
        if state.status not in TERMINAL:
            self.store.mirror_counts(batch.id, job.owner, state.completed, state.failed)
            return self._now() + self.poll_interval
        self._import(job, client, state, done=True)
        return None

    def stop(self, job: BatchJob, since: int) -> bool:
        """Cancel the upstream batch and import what it produced. False while the upstream
        is still winding down (look again later); True when the rest can be settled."""
        batch = job.batch
        if batch.upstream is None or batch.upstream_batch_id is None:
            return True
        client = self.clients(batch.upstream)
        try:
            state = client.retrieve(batch.upstream_batch_id)
            if state.status not in TERMINAL and state.status != "cancelling":
                state = client.cancel(batch.upstream_batch_id)
        except BackendError as exc:  # an unreachable upstream must not keep the batch open forever
            if self._now() < since + self.cancel_wait:
                raise
            log.warning("batch %s: upstream unreachable (%s); settling without it", batch.id, exc.message)
            return True
        if state.status not in TERMINAL:
            if self._now() < since + self.cancel_wait:
                return False
            log.warning("batch %s: upstream batch %s still %s; settling without it", batch.id, state.id, state.status)
            return True
        self._import(job, client, state, done=False)
        return True

    # ---- lines out and results back ------------------------------------------------

    def _input_lines(self, batch: BatchRecord) -> Iterator[tuple[int, int, bytes]]:
        with self.blobs.open(batch.input_file_id) as stream:
            yield from iter_request_lines(stream, self.max_line_bytes)

    def _upstream_lines(self, batch: BatchRecord) -> Iterator[bytes]:
        for _, _, raw in self._input_lines(batch):
            line = orjson.loads(raw)
            line["body"]["model"] = self.routing.routes[line["body"]["model"]].model
            yield orjson.dumps(line)

    def _import(self, job: BatchJob, client: UpstreamBatches, state: UpstreamBatch, done: bool) -> None:
        batch = job.batch
        pending: dict[str, _Line] = {}
        for line, offset, raw in self._input_lines(batch):
            request = orjson.loads(raw)
            pending[request["custom_id"]] = _Line(line, offset, len(raw), request["body"]["model"])
        rows: list[tuple[int, int, RequestResult]] = []
        for file_id in (state.output_file_id, state.error_file_id):
            for raw in client.download(file_id) if file_id else ():
                entry = orjson.loads(raw)
                where = pending.pop(entry.get("custom_id"), None)
                if where is None:
                    log.warning("batch %s: upstream result for unknown custom_id %r", batch.id, entry.get("custom_id"))
                    continue
                rows.append((where.offset, where.length, self._result(batch, entry, where)))
                if len(rows) >= CHUNK:
                    self.store.import_results(batch.id, job.owner, rows, done=False, now=self._now())
                    rows = []
        if done:  # the upstream ended without answering these lines
            reason = f"The upstream batch {state.id} ended {state.status} without a result for this line."
            reason += f" {state.errors}" if state.errors else ""
            for custom_id, where in pending.items():
                missing = RequestResult(
                    batch.id, where.line, RequestState.FAILED, 1, self._ids.next(), custom_id,
                    error_code=f"upstream_{state.status}", error_message=reason, backend=batch.upstream,
                )  # fmt: skip
                rows.append((where.offset, where.length, missing))
        self.store.import_results(batch.id, job.owner, rows, done=done, now=self._now())
        log.info("batch %s: imported upstream batch %s (%s)", batch.id, state.id, state.status)

    def _result(self, batch: BatchRecord, entry: dict[str, Any], where: _Line) -> RequestResult:
        request_id = self._ids.next()
        response, error = entry.get("response"), entry.get("error") or {}
        if not response:
            return RequestResult(
                batch.id, where.line, RequestState.FAILED, 1, request_id, entry["custom_id"],
                error_code=str(error.get("code") or "upstream_error"),
                error_message=str(error.get("message") or "The upstream gave no response."),
                backend=batch.upstream, model=where.model,
            )  # fmt: skip
        body = response.get("body") or {}
        usage = body.get("usage") or {}
        tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        route = self.routing.routes.get(where.model)
        status = int(response.get("status_code") or 0)
        return RequestResult(
            batch.id, where.line, RequestState.SUCCEEDED if status == 200 else RequestState.FAILED, 1, request_id,
            entry["custom_id"], status_code=status, body=orjson.dumps(body), input_tokens=tokens_in,
            output_tokens=tokens_out, cost=route.cost(tokens_in, tokens_out, batch=True) if route else 0.0,
            backend=batch.upstream, model=body.get("model") or where.model,
        )  # fmt: skip
