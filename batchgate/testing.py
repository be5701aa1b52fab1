"""Public fakes at the protocol boundaries, for tests (ours and users'):

- `InMemoryStore`: the `Store` protocol in memory, same semantics as the SQLite store.
- `MemoryBlobStore`: the `BlobStore` protocol in memory.
- `ScriptedBackend`: a `Backend` that answers instantly and deterministically, and
  follows per-line directives in `body["mock"]` to sleep, fail or fail transiently.
- `FakeClock`: a `Clock` that moves only when told to.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from batchgate.core import rollup
from batchgate.core.billing import BillingAttempt, BillingEvent, BillingSummary, BillingTotal
from batchgate.core.bodies import BodySettings, RequestBodies
from batchgate.core.browse import BatchSearch, RequestRow, is_active
from batchgate.core.budgets import BUDGET_PAUSED_STATUSES
from batchgate.core.errors import BackendError, BackendRejectedError, InvalidRequestError, JobLostError, NotFoundError
from batchgate.core.ids import IdSequence, new_id
from batchgate.core.ledger import METERED_STATES, LedgerEntry, LedgerQuery, UsageRow, batch_entry, usage_of
from batchgate.core.models import (
    ApiKey,
    BatchError,
    BatchJob,
    BatchRecord,
    BatchStatus,
    ClaimedRequest,
    FileRecord,
    FinishedRow,
    LineIndex,
    Project,
    PromptRecord,
    PromptVersion,
    RequestResult,
    RequestState,
    StoredResponse,
)
from batchgate.core.ports import BackendRequest, BackendResponse, LimiterWrite, Page, StreamDelta, WorkerInfo
from batchgate.core.scheduling import ClaimCandidate, plan_claims
from batchgate.core.states import (
    ACCEPTS_LINES,
    PAUSABLE_STATUSES,
    RESULT_STATES,
    RUNNABLE_STATUS,
    TERMINAL_STATUSES,
    batch_sources,
    job_kind,
    request_sources,
    settle_sources,
)
from batchgate.core.telemetry import BatchGauges, LedgerTotals, totals_of
from batchgate.core.webhooks import (
    EVENT_OF_STATUS,
    DeliveryStatus,
    DueDelivery,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    event_body,
)
from batchgate.protocol.chat import ChatCompletion, ChatCompletionChoice, ChatCompletionMessage
from batchgate.protocol.completions import Completion, CompletionChoice, CompletionUsage
from batchgate.protocol.embeddings import CreateEmbeddingResponse, Embedding, EmbeddingUsage


class FakeClock:
    """A `Clock` for tests: time stands still until `advance` moves it. A `sleep` returns
    at once, having moved the clock by the time slept (as if the sleeper were alone),
    so a retry backoff of minutes costs a test nothing."""

    def __init__(self, start: float | None = None):
        # the real time by default: a worker's heartbeat from before its process
        # started reads as a previous incarnation's
        self._now = time.time() if start is None else start

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)
        await asyncio.sleep(0)


@dataclass
class _Row:
    offset: int
    length: int
    state: RequestState = RequestState.QUEUED
    custom_id: str | None = None
    attempts: int = 0
    worker_id: str | None = None
    result: RequestResult | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class _Batch:
    record: BatchRecord
    rows: dict[int, _Row]  # created from `lines` as lines are claimed or settled
    lines: list[tuple[int, int, int]] = field(default_factory=list)  # (line, offset, length)
    cursor: int = 0  # position in `lines` of the next line never claimed
    requeued: bool = False
    owner: str | None = None
    wake_at: int = 0


# what `update_api_key` changes (as the SQL stores' keys_sql.update_sql)
_KEY_CHANGEABLE = (
    "name", "scopes", "allowed_models", "expires_at", "limits", "max_parallel_requests", "budget_usd",
    "budget_period", "budget_soft_usd", "routing_profile",
)  # fmt: skip


class InMemoryStore:
    """The Store protocol in memory. Thread-safe; every method is one atomic step."""

    concurrent_writes = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._projects: dict[str, Project] = {}
        self._weights: dict[str, float] = {}  # by project id; 1 unless set
        self._body_settings: dict[str, BodySettings] = {}  # by project id; off unless set
        self._bodies: dict[int, RequestBodies] = {}  # by ledger id
        self._keys: dict[str, ApiKey] = {}
        self._files: dict[str, FileRecord] = {}
        self._batches: dict[str, _Batch] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._prompts: dict[tuple[str, str], PromptRecord] = {}
        self._prompt_versions: dict[tuple[str, str], list[PromptVersion]] = {}
        self._responses: dict[str, StoredResponse] = {}
        self._ledger: list[LedgerEntry] = []
        self._rollup: dict[rollup.RollupKey, rollup.Sums] = {}  # core/rollup.py, kept by _meter
        self._outbox = _Outbox()
        self._limit_levels: dict[str, dict[tuple[str, int], tuple[float, float]]] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # lease id -> (key id, expires_at)
        self._pacing: dict[str, tuple[float | None, str | None]] = {}
        self._billing: dict[str, BillingEvent] = {}  # by identifier, oldest first
        self._billing_attempts: list[BillingAttempt] = []

    def close(self) -> None:
        pass

    def ping(self) -> None:
        pass

    # projects and keys
    def ensure_project(self, name: str, now: int) -> Project:
        with self._lock:
            return self._projects.setdefault(name, Project(new_id("proj_"), name, now))

    def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        with self._lock:
            self._keys[key_hash] = replace(key)

    def _with_project_name(self, key: ApiKey) -> ApiKey:
        names = {p.id: p.name for p in self._projects.values()}
        return replace(key, project_name=names.get(key.project_id, ""))

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        key = self._keys.get(key_hash)
        return self._with_project_name(key) if key and key.revoked_at is None else None

    def list_api_keys(self) -> list[ApiKey]:
        return sorted((self._with_project_name(k) for k in self._keys.values()), key=lambda k: k.created_at)

    def get_api_key(self, key_id: str) -> ApiKey | None:
        found = [k for k in self._keys.values() if k.id == key_id]
        return self._with_project_name(found[0]) if found else None

    def update_api_key(self, key: ApiKey) -> bool:
        with self._lock:
            for stored in self._keys.values():
                if stored.id == key.id and stored.revoked_at is None:
                    for field in _KEY_CHANGEABLE:
                        setattr(stored, field, getattr(key, field))
                    return True
            return False

    def list_projects(self) -> list[Project]:
        return sorted(self._projects.values(), key=lambda p: p.name)

    def set_project_weight(self, project_id: str, weight: float) -> bool:
        with self._lock:
            if project_id not in {p.id for p in self._projects.values()}:
                return False
            self._weights[project_id] = weight
            return True

    def set_project_bodies(self, project_id: str, settings: BodySettings) -> bool:
        with self._lock:
            if project_id not in {p.id for p in self._projects.values()}:
                return False
            self._body_settings[project_id] = settings
            return True

    def project_bodies(self, project_id: str) -> BodySettings:
        with self._lock:
            return self._body_settings.get(project_id, BodySettings())

    def add_request_bodies(self, ledger_id: int, bodies: RequestBodies) -> None:
        with self._lock:
            self._bodies[ledger_id] = bodies

    def get_request_bodies(self, ledger_id: int) -> RequestBodies | None:
        with self._lock:
            return self._bodies.get(ledger_id)

    def project_weights(self) -> dict[str, float]:
        with self._lock:
            return {p.id: self._weights.get(p.id, 1.0) for p in self._projects.values()}

    def revoke_api_key(self, key_id: str, now: int) -> bool:
        with self._lock:
            for key in self._keys.values():
                if key.id == key_id and key.revoked_at is None:
                    key.revoked_at = now
                    return True
            return False

    # files
    def add_file(self, file: FileRecord) -> None:
        with self._lock:
            self._files[file.id] = replace(file)

    def get_file(self, file_id: str, project_id: str | None) -> FileRecord | None:
        f = self._files.get(file_id)
        if f is None or (project_id is not None and f.project_id != project_id):
            return None
        return replace(f)

    def list_files(
        self, project_id: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page[FileRecord]:
        with self._lock:
            files = [f for f in self._files.values() if f.project_id == project_id]
        if order == "desc":
            files.reverse()
        return _page(files, after, limit, lambda f: purpose is None or f.purpose == purpose)

    def delete_file(self, file_id: str, project_id: str) -> bool:
        with self._lock:  # add_batch takes it too: one of the two sees the other's result
            if self.get_file(file_id, project_id) is None or self.file_in_use(file_id):
                return False
            del self._files[file_id]
            return True

    def file_in_use(self, file_id: str) -> bool:
        with self._lock:
            return any(b.record.needs_file(file_id) for b in self._batches.values())

    def delete_expired_files(self, now: int, limit: int) -> list[FileRecord]:
        with self._lock:
            expired = [
                f
                for f in self._files.values()
                if f.expires_at is not None and f.expires_at <= now and not self.file_in_use(f.id)
            ][:limit]
            for f in expired:
                del self._files[f.id]
            return expired

    # batches
    def add_batch(self, batch: BatchRecord) -> bool:
        items = batch.operation.get("items_file_id") if batch.operation else None
        with self._lock:
            if any(self.get_file(f, batch.project_id) is None for f in (batch.input_file_id, items) if f):
                return False
            self._batches[batch.id] = _Batch(replace(batch), {})
            return True

    def get_batch(self, batch_id: str, project_id: str | None) -> BatchRecord | None:
        b = self._batches.get(batch_id)
        if b is None or (project_id is not None and b.record.project_id != project_id):
            return None
        return replace(b.record)

    def list_batches(
        self, project_id: str, after: str | None, limit: int, source: str | None = None
    ) -> Page[BatchRecord]:
        with self._lock:
            batches = [replace(b.record) for b in reversed(self._batches.values()) if b.record.project_id == project_id]
        return _page(batches, after, limit, lambda b: source is None or b.source == source)

    @staticmethod
    def _move(b: _Batch, to: BatchStatus, now: int) -> bool:
        """Apply a move of the state machine, if the batch's status allows it; stamps `{to}_at`."""
        if b.record.status not in batch_sources(to):
            return False
        b.record.status = to
        setattr(b.record, f"{to.value}_at", now)
        return True

    def start_batch(self, batch_id: str, total: int, now: int, owner: str, upstream: str | None = None) -> bool:
        with self._lock:
            b = self._batches[batch_id]
            if b.owner != owner or b.record.status not in ACCEPTS_LINES:
                return False
            b.record.total, b.cursor, b.record.upstream = total, 0, upstream
            self._move(b, BatchStatus.IN_PROGRESS, now)  # a cancelling batch stays cancelling
            return True

    def fail_batch(self, batch_id: str, errors: list[BatchError], now: int, owner: str) -> bool:
        with self._lock:
            b = self._batches[batch_id]
            if b.owner != owner or not self._move(b, BatchStatus.FAILED, now):
                return False
            b.record.errors, b.owner = list(errors), None
            self._outbox.enqueue(b.record, now)
            return True

    def request_cancel(self, batch_id: str, now: int) -> bool:
        with self._lock:
            b = self._batches[batch_id]
            if not self._move(b, BatchStatus.CANCELLING, now):
                return False
            b.wake_at = 0
            return True

    def finish_batch(
        self,
        batch_id: str,
        owner: str,
        status: BatchStatus,
        files: list[FileRecord],
        output_file_id: str | None,
        error_file_id: str | None,
        completed: int,
        failed: int,
        now: int,
    ) -> bool:
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status.value} is not a final status")
        with self._lock:
            b = self._batches[batch_id]
            if b.owner != owner or not self._move(b, status, now):
                return False
            for f in files:
                self._files[f.id] = replace(f)
            rec = b.record
            rec.output_file_id, rec.error_file_id = output_file_id, error_file_id
            rec.completed, rec.failed, rec.total = completed, failed, completed + failed
            b.owner = None
            self._outbox.enqueue(rec, now)
            return True

    # request rows
    def _check_owner(self, batch_id: str, owner: str) -> None:
        if self._batches[batch_id].owner != owner:
            raise JobLostError(f"batch job now belongs to {self._batches[batch_id].owner!r}, not {owner!r}")

    def add_lines(self, batch_id: str, lines: LineIndex, owner: str) -> None:
        with self._lock:
            self._check_owner(batch_id, owner)
            index = self._batches[batch_id].lines
            index.extend((lines[i], lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3))

    def clear_requests(self, batch_id: str, owner: str) -> None:
        with self._lock:
            self._check_owner(batch_id, owner)
            b = self._batches[batch_id]
            b.rows.clear()
            b.lines.clear()

    def settle_unfinished(
        self, batch_id: str, state: RequestState, code: str, message: str, include_running: bool
    ) -> int:
        targets = settle_sources(state, include_running)  # ValueError for a state lines cannot be settled as
        count = 0
        with self._lock:
            b = self._batches[batch_id]
            for line, offset, length in b.lines[b.cursor :]:
                b.rows.setdefault(line, _Row(offset, length))  # a passed-through batch's may exist
            b.cursor, b.requeued = len(b.lines), False
            for row in b.rows.values():
                if row.state in targets:
                    row.state, row.error_code, row.error_message, row.worker_id = state, code, message, None
                    count += 1
        return count

    def set_upstream_batch(self, batch_id: str, owner: str, upstream_batch_id: str) -> None:
        with self._lock:
            self._check_owner(batch_id, owner)
            self._batches[batch_id].record.upstream_batch_id = upstream_batch_id

    def mirror_counts(self, batch_id: str, owner: str, completed: int, failed: int) -> None:
        with self._lock:
            self._check_owner(batch_id, owner)
            self._batches[batch_id].record.completed, self._batches[batch_id].record.failed = completed, failed

    def import_results(
        self, batch_id: str, owner: str, rows: list[tuple[int, int, RequestResult]], done: bool, now: int
    ) -> None:
        with self._lock:
            self._check_owner(batch_id, owner)
            b = self._batches[batch_id]
            metered = {e.line for e in self._ledger if e.batch_id == batch_id}
            for offset, length, r in rows:
                b.rows[r.line] = _Row(offset, length, r.state, r.custom_id, r.attempts, result=r)
                if r.state in METERED_STATES and r.line not in metered:
                    rec = b.record
                    self._meter(batch_entry(r, rec.project_id, rec.key_id, rec.endpoint, now))
            results = [row.result for row in b.rows.values() if row.result is not None]
            rec = b.record
            rec.completed = sum(r.state == RequestState.SUCCEEDED for r in results)
            rec.failed = sum(r.state == RequestState.FAILED for r in results)
            rec.input_tokens = sum(r.input_tokens for r in results)
            rec.output_tokens = sum(r.output_tokens for r in results)
            rec.cost = sum(r.cost for r in results)
            if done:
                b.cursor = len(b.lines)
                self._move(b, BatchStatus.FINALIZING, now)

    def count_running(self, batch_id: str) -> int:
        return sum(r.state == RequestState.RUNNING for r in self._batches[batch_id].rows.values())

    def iter_finished(self, batch_id: str) -> Iterator[FinishedRow]:
        with self._lock:
            rows = sorted(self._batches[batch_id].rows.items())
        for line, row in rows:
            res = row.result
            yield FinishedRow(
                line, row.custom_id, row.offset, row.length, row.state, res.request_id if res else None,
                res.status_code if res else None, res.body if res else None,
                res.error_code if res else row.error_code, res.error_message if res else row.error_message,
                res.cost if res else 0.0,
            )  # fmt: skip

    # prompt templates
    def add_prompt(self, prompt: PromptRecord) -> bool:
        with self._lock:
            key = (prompt.project_id, prompt.slug)
            if key in self._prompts:
                return False
            self._prompts[key] = replace(prompt)
            self._prompt_versions[key] = []
            return True

    def get_prompt(self, project_id: str, slug: str) -> PromptRecord | None:
        prompt = self._prompts.get((project_id, slug))
        return replace(prompt) if prompt else None

    def list_prompts(self, project_id: str) -> list[PromptRecord]:
        return sorted((replace(p) for p in self._prompts.values() if p.project_id == project_id), key=lambda p: p.slug)

    def add_prompt_version(
        self, project_id: str, slug: str, messages: list[dict[str, Any]], model_config: dict[str, Any], now: int
    ) -> PromptVersion:
        with self._lock:
            versions = self._prompt_versions[(project_id, slug)]
            versions.append(PromptVersion(slug, len(versions) + 1, messages, model_config, now))
            return versions[-1]

    def list_prompt_versions(self, project_id: str, slug: str) -> list[PromptVersion]:
        return list(self._prompt_versions.get((project_id, slug), []))

    def get_prompt_version(self, project_id: str, slug: str, version: int | None) -> PromptVersion | None:
        prompt = self._prompts.get((project_id, slug))
        number = version if version is not None else (prompt.published_version if prompt else None)
        versions = self._prompt_versions.get((project_id, slug), [])
        return versions[number - 1] if number is not None and 0 < number <= len(versions) else None

    def publish_prompt_version(self, project_id: str, slug: str, version: int) -> bool:
        with self._lock:
            prompt = self._prompts.get((project_id, slug))
            if prompt is None or not 0 < version <= len(self._prompt_versions[(project_id, slug)]):
                return False
            prompt.published_version = version
            return True

    # stored responses
    def add_response(self, response: StoredResponse) -> None:
        with self._lock:
            self._responses[response.id] = replace(response)

    def get_response(self, response_id: str, project_id: str) -> StoredResponse | None:
        stored = self._responses.get(response_id)
        return replace(stored) if stored and stored.project_id == project_id else None

    def delete_response(self, response_id: str, project_id: str) -> bool:
        with self._lock:
            if self.get_response(response_id, project_id) is None:
                return False
            del self._responses[response_id]
            return True

    def delete_expired_responses(self, created_before: int, limit: int) -> int:
        with self._lock:
            expired = sorted(
                (r for r in self._responses.values() if r.created_at < created_before), key=lambda r: r.created_at
            )[:limit]
            for response in expired:
                del self._responses[response.id]
            return len(expired)

    # workers
    def register_worker(self, info: WorkerInfo) -> None:
        with self._lock:
            self._workers[info.id] = replace(info)

    def heartbeat(self, worker_id: str, now: float) -> bool:
        with self._lock:
            if worker_id not in self._workers:
                return False
            self._workers[worker_id].heartbeat_at = now
            return True

    def list_workers(self) -> list[WorkerInfo]:
        return [replace(w) for w in self._workers.values()]

    def reap_worker(self, worker_id: str) -> int:
        count = 0
        requeueable = request_sources(RequestState.QUEUED)
        with self._lock:
            for b in self._batches.values():
                for row in b.rows.values():
                    if row.state in requeueable and row.worker_id == worker_id:
                        row.state, row.worker_id = RequestState.QUEUED, None
                        b.requeued = True
                        count += 1
                if b.owner == worker_id:
                    b.owner = None
            self._workers.pop(worker_id, None)
        return count

    def requeue_orphans(self) -> int:
        count = 0
        requeueable = request_sources(RequestState.QUEUED)
        with self._lock:
            for b in self._batches.values():
                for row in b.rows.values():
                    if row.state in requeueable and row.worker_id not in self._workers:
                        row.state, row.worker_id, b.requeued = RequestState.QUEUED, None, True
                        count += 1
                if b.owner is not None and b.owner not in self._workers:
                    b.owner = None
        return count

    def claim_batch_job(self, worker_id: str, now: int) -> BatchJob | None:
        with self._lock:
            for b in self._batches.values():
                kind = job_kind(b.record, now)
                if kind is None or b.owner is not None or b.wake_at > now:
                    continue
                b.owner = worker_id
                return BatchJob(kind, replace(b.record), worker_id)
        return None

    def release_batch_job(self, batch_id: str, worker_id: str, wake_at: int) -> None:
        with self._lock:
            b = self._batches[batch_id]
            if b.owner == worker_id:
                b.owner, b.wake_at = None, wake_at

    def claim_requests(self, worker_id: str, limit: int, now: int) -> list[ClaimedRequest]:
        claims: list[ClaimedRequest] = []
        claimable = request_sources(RequestState.RUNNING)
        with self._lock:
            runnable = [
                b for b in self._batches.values()
                if b.record.status == RUNNABLE_STATUS and b.record.expires_at > now
                and (b.cursor < len(b.lines) or b.requeued) and b.record.upstream is None
                and b.record.paused_at is None
                and b.record.budget_paused_at is None
            ]  # fmt: skip
            candidates = [
                ClaimCandidate(
                    b, b.record.project_id, b.record.key_id, self._weights.get(b.record.project_id, 1.0),
                    b.record.priority, len(b.lines) - b.cursor + (len(b.lines) if b.requeued else 0),
                    b.record.total, b.record.completed + b.record.failed, b.record.created_at,
                    b.record.in_progress_at, b.record.expires_at,
                )
                for b in runnable
            ]  # fmt: skip
            for candidate, want in plan_claims(candidates, limit, now):
                b = candidate.ref
                taken = [line for line, row in sorted(b.rows.items()) if row.state in claimable][:want]
                b.requeued = len(taken) == want
                for line, offset, length in b.lines[b.cursor : b.cursor + want - len(taken)]:
                    b.rows[line] = _Row(offset, length)
                    taken.append(line)
                    b.cursor += 1
                for line in taken:
                    row = b.rows[line]
                    row.state, row.worker_id = RequestState.RUNNING, worker_id
                    row.attempts += 1
                    rec = b.record
                    claims.append(
                        ClaimedRequest(
                            rec.id,
                            rec.input_file_id,
                            rec.endpoint,
                            line,
                            row.offset,
                            row.length,
                            row.attempts,
                            rec.project_id,
                        )
                    )
        return claims

    def record_results(self, worker_id: str, results: list[RequestResult], now: int) -> None:
        if bad := {r.state for r in results} - RESULT_STATES:
            raise ValueError(f"a run cannot end {', '.join(sorted(bad))}")
        with self._lock:
            for r in results:
                b = self._batches[r.batch_id]
                row = b.rows[r.line]
                if row.state != RequestState.RUNNING or row.worker_id != worker_id:
                    continue
                row.state, row.attempts, row.worker_id, row.result = r.state, r.attempts, None, r
                row.custom_id = r.custom_id or row.custom_id
                rec = b.record
                rec.completed += r.state == RequestState.SUCCEEDED
                rec.failed += r.state == RequestState.FAILED
                rec.input_tokens += r.input_tokens
                rec.output_tokens += r.output_tokens
                rec.cost += r.cost
                if r.state in METERED_STATES:
                    self._meter(batch_entry(r, rec.project_id, rec.key_id, rec.endpoint, now))
                if rec.completed + rec.failed >= rec.total:
                    self._move(b, BatchStatus.FINALIZING, now)

    def _meter(self, entry: LedgerEntry) -> None:
        entry.id = len(self._ledger) + 1
        self._ledger.append(entry)
        rollup.add(self._rollup, entry)

    # rate limits
    def rate_limit_step(
        self,
        key_id: str,
        now: float,
        count_running: bool,
        step: Callable[[dict[tuple[str, int], tuple[float, float]], int], LimiterWrite],
        wait: bool = True,  # in memory a step never waits long: always taken
    ) -> bool:
        with self._lock:
            held = [e for k, e in self._leases.values() if k == key_id]
            write = step(dict(self._limit_levels.get(key_id, {})), sum(e > now for e in held) if count_running else 0)
            self._limit_levels.setdefault(key_id, {}).update(write.levels)
            if write.drop_lease is not None:
                self._leases.pop(write.drop_lease, None)
            if write.add_lease is not None:
                for lease, (k, expires_at) in list(self._leases.items()):
                    if k == key_id and expires_at <= now:
                        del self._leases[lease]
                self._leases[write.add_lease[0]] = (key_id, write.add_lease[1])
        return True

    def set_batch_pacing(self, batch_id: str, until: float | None, note: str | None) -> None:
        with self._lock:
            self._pacing[batch_id] = (until, note)

    def batch_pacing(self, batch_ids: list[str]) -> dict[str, tuple[float, str]]:
        return {
            b: (until, note or "")
            for b in batch_ids
            if (until := self._pacing.get(b, (None, None))[0]) is not None
            for note in [self._pacing[b][1]]
        }

    def add_ledger_entry(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._meter(entry)

    def list_ledger(self, query: LedgerQuery) -> Page[LedgerEntry]:
        with self._lock:
            rows = [replace(e) for e in reversed(self._ledger) if query.matches(e)]
        return Page(rows[: query.limit], len(rows) > query.limit)

    def ledger_usage(self, query: LedgerQuery, group_by: tuple[str, ...], bucket_seconds: int) -> list[UsageRow]:
        whole = replace(query, before=None)
        with self._lock:
            if (plan := rollup.plan(whole, group_by, bucket_seconds)) is None:
                return usage_of([e for e in self._ledger if whole.matches(e)], group_by, bucket_seconds)
            parts = [rollup.usage_of_sums(self._rollup, whole, plan, group_by, bucket_seconds)]
            for edge in plan.edges:
                parts.append(usage_of([e for e in self._ledger if edge.matches(e)], group_by, bucket_seconds))
            return rollup.merge(parts)

    def key_spend(self, key_id: str, since: float | None, after: int = 0, upto: int | None = None) -> float:
        with self._lock:
            return sum(
                e.cost for e in self._ledger
                if e.key_id == key_id and (since is None or e.started_at >= since)
                and after < e.id and (upto is None or e.id <= upto)
            )  # fmt: skip

    def set_budget_pauses(self, key_ids: list[str], now: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        spent = set(key_ids)
        pause: list[tuple[str, str]] = []
        resume: list[tuple[str, str]] = []
        with self._lock:
            for b in self._batches.values():
                rec = b.record
                wanted = rec.status in BUDGET_PAUSED_STATUSES and rec.key_id in spent
                if wanted and rec.budget_paused_at is None:
                    rec.budget_paused_at = now
                    pause.append((rec.id, rec.key_id or ""))
                elif not wanted and rec.budget_paused_at is not None:
                    rec.budget_paused_at = None
                    resume.append((rec.id, rec.key_id or ""))
        return pause, resume

    def ledger_max_id(self) -> int:
        with self._lock:
            return len(self._ledger)

    def ledger_totals(self, after: int, upto: int | None) -> list[LedgerTotals]:
        with self._lock:
            return totals_of(e for e in self._ledger if e.id > after and (upto is None or e.id <= upto))

    def batch_gauges(self) -> BatchGauges:
        with self._lock:
            records = [b.record for b in self._batches.values()]
            running = sum(r.state == RequestState.RUNNING for b in self._batches.values() for r in b.rows.values())
        by_status = Counter(r.status.value for r in records)
        pending = sum(r.total - r.completed - r.failed for r in records if r.status == RUNNABLE_STATUS)
        paused = sum(r.budget_paused_at is not None for r in records)
        return BatchGauges(dict(by_status), paused, pending, running)

    # the billing outbox (core/billing.py)
    def add_billing_events(self, events: list[BillingEvent]) -> int:
        added = 0
        with self._lock:
            for e in events:
                key = (e.project_id, e.meter, e.bucket_start, e.seq)
                if e.identifier in self._billing or key in {
                    (b.project_id, b.meter, b.bucket_start, b.seq) for b in self._billing.values()
                }:
                    continue
                self._billing[e.identifier] = replace(e)
                added += 1
        return added

    def billing_totals(self, since: int) -> list[BillingTotal]:
        totals: dict[tuple[str, str, int], BillingTotal] = {}
        with self._lock:
            for e in self._billing.values():
                if e.bucket_start >= since:
                    key = (e.project_id, e.meter, e.bucket_start)
                    t = totals.setdefault(key, BillingTotal(*key, value=0, events=0))
                    t.value += e.value
                    t.events += 1
        return list(totals.values())

    def claim_billing_event(self, now: float, lease: float) -> BillingEvent | None:
        with self._lock:
            due = [e for e in self._billing.values() if e.status == "pending" and e.next_attempt_at <= now]
            if not due:
                return None
            event = min(due, key=lambda e: e.next_attempt_at)  # ties: the oldest (dicts keep order)
            claimed = replace(event)
            event.next_attempt_at = now + lease
            return claimed

    def record_billing_attempt(self, attempt: BillingAttempt, status: str, next_attempt_at: float) -> None:
        with self._lock:
            self._billing_attempts.append(replace(attempt))
            event = self._billing.get(attempt.identifier)
            if event is not None and event.status == "pending":
                event.status, event.next_attempt_at, event.last_error = status, next_attempt_at, attempt.error
                event.attempts += 1
                event.sent_at = int(attempt.at) if status == "sent" else None

    def list_billing_events(self, status: str | None, limit: int) -> list[BillingEvent]:
        with self._lock:
            events = [replace(e) for e in reversed(self._billing.values()) if status in (None, e.status)]
        return events[:limit]

    def list_billing_attempts(self, identifier: str) -> list[BillingAttempt]:
        with self._lock:
            return [replace(a) for a in self._billing_attempts if a.identifier == identifier]

    def retry_failed_billing_events(self, now: float) -> int:
        with self._lock:
            failed = [e for e in self._billing.values() if e.status == "failed"]
            for e in failed:
                e.status, e.next_attempt_at = "pending", now
        return len(failed)

    def billing_summary(self) -> BillingSummary:
        with self._lock:
            events = list(self._billing.values())
        pending = [e.next_attempt_at for e in events if e.status == "pending"]
        return BillingSummary(
            len(pending), sum(e.status == "sent" for e in events), sum(e.status == "failed" for e in events),
            min(pending) if pending else None,
        )  # fmt: skip

    def search_batches(self, query: BatchSearch) -> Page[BatchRecord]:
        with self._lock:
            models = {query.model}
            metered = {e.batch_id for e in self._ledger if models & {e.model, e.resolved_model}}
            wanted = [
                replace(b.record)
                for b in reversed(self._batches.values())
                if all(
                    value is None or value == have
                    for value, have in (
                        (query.project_id, b.record.project_id),
                        (query.status, b.record.status),
                        (query.source, b.record.source),
                        (query.key_id, b.record.key_id),
                    )
                )
                and (query.model is None or b.record.id in metered)
            ]
        wanted.sort(key=lambda r: not is_active(r.status))  # stable: newest first within each group
        page = wanted[query.offset : query.offset + query.limit + 1]
        return Page(page[: query.limit], len(page) > query.limit)

    def list_request_rows(
        self, batch_id: str, state: RequestState | None, after_line: int | None, limit: int
    ) -> Page[RequestRow]:
        with self._lock:
            rows = self._batches[batch_id].rows
            found = [
                _request_row(line, rows[line])
                for line in sorted(rows)
                if (after_line is None or line > after_line) and (state is None or rows[line].state == state)
            ]
        return Page(found[:limit], len(found) > limit)

    # pause, resume, retry links
    def pause_batch(self, batch_id: str, now: int) -> bool:
        with self._lock:
            rec = self._batches[batch_id].record
            if rec.paused_at is not None or rec.status not in PAUSABLE_STATUSES:
                return False
            rec.paused_at = now
            return True

    def resume_batch(self, batch_id: str) -> bool:
        with self._lock:
            rec = self._batches[batch_id].record
            if rec.paused_at is None or rec.status not in PAUSABLE_STATUSES:
                return False
            rec.paused_at = None
            return True

    def link_retry(self, batch_id: str, retry_id: str) -> bool:
        with self._lock:
            rec = self._batches[batch_id].record
            if rec.metadata and "retried_by" in rec.metadata:
                return False
            rec.metadata = {**(rec.metadata or {}), "retried_by": retry_id}
            return True

    # webhooks
    def add_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        with self._lock:
            self._outbox.endpoints[endpoint.id] = replace(endpoint)

    def list_webhook_endpoints(self, project_id: str) -> list[WebhookEndpoint]:
        with self._lock:
            found = [replace(e) for e in self._outbox.endpoints.values() if e.project_id == project_id]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def get_webhook_endpoint(self, endpoint_id: str, project_id: str) -> WebhookEndpoint | None:
        e = self._outbox.endpoints.get(endpoint_id)
        return replace(e) if e is not None and e.project_id == project_id else None

    def delete_webhook_endpoint(self, endpoint_id: str, project_id: str) -> bool:
        with self._lock:
            if self.get_webhook_endpoint(endpoint_id, project_id) is None:
                return False
            del self._outbox.endpoints[endpoint_id]
            self._outbox.deliveries = [d for d in self._outbox.deliveries if d.endpoint_id != endpoint_id]
            return True

    def batch_event(self, batch_id: str) -> WebhookEvent | None:
        with self._lock:
            return next((replace(e) for e in self._outbox.events.values() if e.batch_id == batch_id), None)

    def claim_webhook_deliveries(self, now: int, limit: int, lease_until: int) -> list[DueDelivery]:
        with self._lock:
            return self._outbox.claim(now, limit, lease_until)

    def record_webhook_attempt(
        self, delivery_id: int, attempt: WebhookAttempt, next_attempt_at: int | None, delivered: bool
    ) -> None:
        with self._lock:
            self._outbox.record(delivery_id, attempt, next_attempt_at, delivered)

    def list_webhook_deliveries(self, endpoint_id: str, project_id: str, limit: int) -> list[WebhookDelivery]:
        with self._lock:
            if self.get_webhook_endpoint(endpoint_id, project_id) is None:
                return []
            mine = [d for d in reversed(self._outbox.deliveries) if d.endpoint_id == endpoint_id][:limit]
            return [replace(d, attempt_log=list(d.attempt_log)) for d in mine]


def _request_row(line: int, row: _Row) -> RequestRow:
    r = row.result
    return RequestRow(
        line=line, custom_id=row.custom_id, state=row.state, attempts=row.attempts,
        status_code=r.status_code if r else None, error_code=(r.error_code if r else None) or row.error_code,
        error_message=(r.error_message if r else None) or row.error_message,
        input_tokens=r.input_tokens if r else 0, output_tokens=r.output_tokens if r else 0, cost=r.cost if r else 0.0,
        latency_ms=r.latency_ms if r else None, backend=r.backend if r else None, model=r.model if r else None,
        body=r.body if r else None,
    )  # fmt: skip


class _Outbox:
    """The webhook outbox in memory: what the SQL stores keep in webhook_* tables."""

    def __init__(self) -> None:
        self.endpoints: dict[str, WebhookEndpoint] = {}
        self.events: dict[str, WebhookEvent] = {}
        self.deliveries: list[WebhookDelivery] = []

    def enqueue(self, batch: BatchRecord, now: int) -> None:
        event_type = EVENT_OF_STATUS.get(batch.status)
        if event_type is None or any(e.batch_id == batch.id for e in self.events.values()):
            return
        event_id = new_id("evt_")
        body = event_body(event_id, event_type, now, batch.id)
        self.events[event_id] = WebhookEvent(event_id, batch.project_id, batch.id, event_type, now, body)
        for e in self.endpoints.values():
            if e.project_id == batch.project_id and event_type in e.events:
                self.deliveries.append(
                    WebhookDelivery(
                        len(self.deliveries) + 1, event_id, event_type, batch.id, e.id, DeliveryStatus.PENDING,
                        0, now, None, now,
                    )
                )  # fmt: skip

    def claim(self, now: int, limit: int, lease_until: int) -> list[DueDelivery]:
        due = [
            d
            for d in self.deliveries
            if d.status == DeliveryStatus.PENDING and d.next_attempt_at is not None and d.next_attempt_at <= now
        ]
        due = sorted(due, key=lambda d: (d.next_attempt_at or 0, d.id))[:limit]
        claimed = []
        for d in due:
            d.next_attempt_at = lease_until
            endpoint = self.endpoints[d.endpoint_id]
            claimed.append(
                DueDelivery(d.id, d.event_id, self.events[d.event_id].body, d.attempts, endpoint.url, endpoint.secret)
            )
        return claimed

    def record(self, delivery_id: int, attempt: WebhookAttempt, next_at: int | None, delivered: bool) -> None:
        d = next((d for d in self.deliveries if d.id == delivery_id), None)
        if d is None or any(a.attempt == attempt.attempt for a in d.attempt_log):
            return
        d.attempt_log.append(replace(attempt))
        if d.status != DeliveryStatus.PENDING:
            return
        d.attempts, d.last_attempt_at = attempt.attempt, attempt.at
        if delivered:
            d.status, d.next_attempt_at = DeliveryStatus.DELIVERED, None
        elif next_at is None:
            d.status, d.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            d.next_attempt_at = next_at


def _page(items: list[Any], after: str | None, limit: int, keep: Any) -> Page[Any]:
    if after is not None:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    items = [i for i in items if keep(i)]
    return Page(items[:limit], len(items) > limit)


class _MemoryWriter:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.buffer.write(data)
        self.size += len(data)


class MemoryBlobStore:
    """The BlobStore protocol in memory (tests only: holds whole files)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    @contextmanager
    def writer(self, blob_id: str) -> Iterator[_MemoryWriter]:
        writer = _MemoryWriter()
        yield writer
        self.blobs[blob_id] = writer.buffer.getvalue()

    def open(self, blob_id: str) -> BinaryIO:
        if blob_id not in self.blobs:
            raise NotFoundError(f"The content of file {blob_id} is missing.")
        return io.BytesIO(self.blobs[blob_id])

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        return self.blobs[blob_id][offset : offset + length]

    def delete(self, blob_id: str) -> None:
        self.blobs.pop(blob_id, None)


class ScriptedBackend:
    """A deterministic backend for tests and benchmarks.

    By default it answers every request at once with an echo of its input, in the
    response shape of the endpoint, with usage counted in whitespace-separated words.
    A line can script its own fate with `body["mock"]`:
      {"sleep": 0.5}               wait before answering
      {"status": 400}              answer with that HTTP status and an error body
      {"fail": "message"}          fail without a response (a permanent backend error)
      {"transient_failures": 2}    fail transiently on the first 2 attempts, then answer
    With `count_calls`, `calls` counts attempts per custom_id (for tests; it grows with
    every distinct id, so a server leaves it off).
    """

    name = "scripted"

    def __init__(self, default_sleep: float = 0.0, count_calls: bool = False):
        self.default_sleep = default_sleep
        self.count_calls = count_calls
        self.calls: Counter[str] = Counter()
        self._transient: Counter[str] = Counter()  # attempts of lines that script failures

    async def execute(self, request: BackendRequest) -> BackendResponse:
        if self.count_calls:
            self.calls[request.custom_id] += 1
        body = request.body
        mock = body.get("mock") or {}
        sleep = mock.get("sleep", self.default_sleep)
        if sleep:
            await asyncio.sleep(sleep)
        if mock.get("transient_failures"):
            self._transient[request.custom_id] += 1
            if self._transient[request.custom_id] <= mock["transient_failures"]:
                raise BackendError("scripted transient failure", code="server_error", transient=True, retry_after=0.01)
        if "fail" in mock:
            raise BackendError(str(mock["fail"]), code="backend_error")
        if "status" in mock:
            message = {
                "message": f"scripted error {mock['status']}",
                "type": "invalid_request_error",
            }
            raise BackendRejectedError(BackendResponse(int(mock["status"]), {"error": message}))
        return _echo(request.url, body)

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        """The echo, a word at a time."""
        response = await self.execute(request)  # a scripted refusal is raised before any delta
        choice = response.body["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        words = text.split(" ")
        for word in words[:-1]:
            yield StreamDelta(word + " ")
        yield StreamDelta(words[-1], "stop", response.input_tokens, response.output_tokens)

    def models(self) -> list[str]:
        return []  # it answers for any model name

    async def aclose(self) -> None:
        pass


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content", ""))
    return 0


_completion_ids = IdSequence("cmpl-")


# the answers' JSON shapes, made once by the protocol models (every field, as a real
# backend's body): an echo copies them and fills in its values, because building and
# dumping the models for every line costs more than the rest of a batch line's path
_CHAT_SHAPE = ChatCompletion(
    id="",
    created=0,
    model="",
    choices=[ChatCompletionChoice(index=0, message=ChatCompletionMessage(content=""), finish_reason="stop")],
    usage=CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
).model_dump()
_COMPLETION_SHAPE = Completion(
    id="",
    created=0,
    model="",
    choices=[CompletionChoice(index=0, text="", finish_reason="stop")],
    usage=CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
).model_dump()


def _echo(url: str, body: dict[str, Any]) -> BackendResponse:
    """The echo in the endpoint's response model, as a real backend's JSON body."""
    model = str(body["model"])
    if url == "/v1/embeddings":
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [Embedding(index=i, embedding=[float(len(str(x))), 1.0, 0.0]) for i, x in enumerate(inputs)]
        tokens = _words(inputs)
        embeddings = CreateEmbeddingResponse(
            data=data, model=model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        )
        return BackendResponse(200, embeddings.model_dump(), tokens, 0, model)
    if url == "/v1/completions":
        prompt = body.get("prompt", "")
        if not isinstance(prompt, (str, list)):  # refused as a real backend refuses it, not a crash
            raise InvalidRequestError("'prompt' must be a string or an array.", param="prompt", code="invalid_type")
        text = "echo: " + (prompt if isinstance(prompt, str) else " ".join(map(str, prompt)))
        tokens_in, tokens_out = _words(prompt), _words(text)
        shape = _COMPLETION_SHAPE
        choice = {**shape["choices"][0], "text": text}
    else:
        messages = body.get("messages") or [{}]
        last = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
        text = "echo: " + (last if isinstance(last, str) else str(last))
        tokens_in, tokens_out = _words(messages), _words(text)
        shape = _CHAT_SHAPE
        choice = {**shape["choices"][0]}
        choice["message"] = {**choice["message"], "content": text}
    usage = {**shape["usage"], "prompt_tokens": tokens_in, "completion_tokens": tokens_out}
    usage["total_tokens"] = tokens_in + tokens_out
    answer = {
        **shape, "id": _completion_ids.next(), "created": int(time.time()), "model": model, "choices": [choice],
        "usage": usage,
    }  # fmt: skip
    return BackendResponse(200, answer, tokens_in, tokens_out, model)
