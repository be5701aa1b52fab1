"""The protocols core talks to: the Store (rows), the BlobStore (file bytes), the Backend.

Concrete implementations live in `store/` and `engines/`; fakes in `batchgate.testing`.
Core never imports those packages, only these protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, Protocol, TypeVar

from batchgate.core.billing import BillingAttempt, BillingEvent, BillingSummary, BillingTotal
from batchgate.core.bodies import BodySettings, RequestBodies
from batchgate.core.browse import BatchSearch, RequestRow
from batchgate.core.ledger import LedgerEntry, LedgerQuery, UsageRow
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
from batchgate.core.telemetry import BatchGauges, LedgerTotals

if TYPE_CHECKING:  # core.webhooks imports core.errors, which imports this module
    from batchgate.core.webhooks import DueDelivery, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent


@dataclass(slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    heartbeat_at: float


T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    data: list[T]
    has_more: bool


@dataclass(slots=True)
class LimiterWrite:
    """What a rate-limit step (core/ratelimit.py) writes in the transaction it read in:
    the levels of the key's limits, (kind, window_s) -> (level, updated_at), and a
    parallel-request lease (id, expires_at) to add or (id) to drop."""

    levels: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    add_lease: tuple[str, float] | None = None
    drop_lease: str | None = None


class Store(Protocol):
    """Rows: projects, keys, files, batches, requests, workers. Every write is atomic.

    A store applies the moves of the state machine in `core/states.py`, never its own:
    a batch or request row changes state only from a source state the tables allow for
    the target. Every implementation passes `tests/contract/test_store_contract.py`.
    Calls block: async code reaches a store through a thread (see `core/worker.py`).
    """

    # whether two threads' writes proceed at once (PostgreSQL's row locks) rather than
    # one after the other (SQLite's database lock): the worker then claims on a thread
    # of its own while its results are being written
    concurrent_writes: bool

    def close(self) -> None: ...
    def ping(self) -> None: ...

    # projects and keys
    def ensure_project(self, name: str, now: int) -> Project: ...
    def add_api_key(self, key: ApiKey, key_hash: str) -> None: ...
    def find_api_key(self, key_hash: str) -> ApiKey | None: ...
    def list_api_keys(self) -> list[ApiKey]: ...
    def get_api_key(self, key_id: str) -> ApiKey | None:
        """A key by id, revoked or not."""
        ...

    def update_api_key(self, key: ApiKey) -> bool:
        """Write the key's name, scopes, allowed models and expiry; False if there is no
        such key or it is revoked."""
        ...

    def list_projects(self) -> list[Project]: ...
    def set_project_weight(self, project_id: str, weight: float) -> bool:
        """Set the project's share weight for claims (core/scheduling.py); False if there
        is no such project."""
        ...

    def project_weights(self) -> dict[str, float]:
        """Every project's weight (1 unless set), by project id."""
        ...

    # stored request bodies (core/bodies.py): a project's opt-in, and the bodies by ledger row
    def set_project_bodies(self, project_id: str, settings: BodySettings) -> bool:
        """Set whether the project's synchronous requests keep their bodies, and the cap;
        False if there is no such project."""
        ...

    def project_bodies(self, project_id: str) -> BodySettings:
        """The project's setting (off, 16 KiB, unless set; the same for an unknown project)."""
        ...

    def add_request_bodies(self, ledger_id: int, bodies: RequestBodies) -> None:
        """Keep the bodies of the request metered by ledger row `ledger_id`."""
        ...

    def get_request_bodies(self, ledger_id: int) -> RequestBodies | None:
        """The bodies kept for ledger row `ledger_id`, or None."""
        ...

    def revoke_api_key(self, key_id: str, now: int) -> bool: ...

    # files
    def add_file(self, file: FileRecord) -> None: ...
    def get_file(self, file_id: str, project_id: str | None) -> FileRecord | None: ...
    def list_files(
        self, project_id: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page[FileRecord]:
        """The project's files after the one with id `after` (an id the project does not
        have, whether unknown or another project's, gives an empty page)."""
        ...

    def delete_file(self, file_id: str, project_id: str) -> bool:
        """Delete the file's row unless a batch needs it (`BatchRecord.needs_file`), in one
        step that a concurrent `add_batch` on it cannot interleave with: exactly one of them
        wins. False if there is no such file or a batch needs it."""
        ...

    def file_in_use(self, file_id: str) -> bool:
        """Whether a batch needs the file (`BatchRecord.needs_file`)."""
        ...

    def delete_expired_files(self, now: int, limit: int) -> list[FileRecord]:
        """Delete up to `limit` rows of files whose `expires_at` is at or before `now`,
        except files a batch needs (`file_in_use`), atomically; the
        deleted rows (their bytes are the caller's to delete)."""
        ...

    # batches
    def add_batch(self, batch: BatchRecord) -> bool:
        """Add the batch if its input file (and an operation's items file) is still in its
        project, atomically with `delete_file`; False, and nothing added, if one is gone."""
        ...

    def get_batch(self, batch_id: str, project_id: str | None) -> BatchRecord | None: ...
    def list_batches(
        self, project_id: str, after: str | None, limit: int, source: str | None = None
    ) -> Page[BatchRecord]:
        """The project's batches, newest first, after the one with id `after` (as in
        list_files); with `source`, only batches of that source ("openai", "operation"),
        filtered before the page is cut, so a page is never empty while more match."""
        ...

    def start_batch(self, batch_id: str, total: int, now: int, owner: str, upstream: str | None = None) -> bool:
        """Record `total` lines and move validating -> in_progress. A batch cancelled while
        it validated keeps its status but gets its lines (to settle as cancelled).
        With `upstream`, the batch runs on that upstream's own Batch API: workers never
        claim its lines; a "native" job submits and polls it instead.
        False if `owner` no longer holds the validation job."""
        ...

    def set_upstream_batch(self, batch_id: str, owner: str, upstream_batch_id: str) -> None:
        """Remember the upstream's id of a passed-through batch (JobLostError if not owner)."""
        ...

    def mirror_counts(self, batch_id: str, owner: str, completed: int, failed: int) -> None:
        """Live counts of a passed-through batch, as its upstream reports them."""
        ...

    def import_results(
        self, batch_id: str, owner: str, rows: list[tuple[int, int, RequestResult]], done: bool, now: int
    ) -> None:
        """Write final rows (input offset, length, result) for lines a passed-through batch's
        upstream answered; counts and usage are recomputed from the rows, and each line
        that ran is metered (once: a line imported again keeps its ledger row). With `done`, the
        batch moves in_progress -> finalizing at `now` (lines without a row must not remain)."""
        ...

    def fail_batch(self, batch_id: str, errors: list[BatchError], now: int, owner: str) -> bool: ...
    def request_cancel(self, batch_id: str, now: int) -> bool:
        """validating|in_progress -> cancelling; False if the batch is in another status."""
        ...

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
        """Register the result files and move the batch to its terminal status, atomically;
        only if `owner` still holds the job and the batch is still in a status that leads
        there (finalizing -> completed, cancelling -> cancelled, in_progress -> expired).
        ValueError if `status` is not terminal."""
        ...

    # request rows
    def add_lines(self, batch_id: str, lines: LineIndex, owner: str) -> None:
        """Append a chunk of the batch's line index (validation writes it in input order).

        Request rows are created from the index as lines are claimed, so accepting a
        million-line batch writes a few index chunks, not a million rows. Raises
        JobLostError if `owner` no longer holds the validation job."""
        ...

    def clear_requests(self, batch_id: str, owner: str) -> None:
        """Forget the line index and the request rows (a validation that is redone)."""
        ...

    def settle_unfinished(
        self, batch_id: str, state: RequestState, code: str, message: str, include_running: bool
    ) -> int:
        """End every line not yet done: queued rows (and running ones, if asked) and lines
        never claimed get `state` with this error. Afterwards every line has its row.
        ValueError if waiting lines cannot move to `state` (it is not cancelled or expired)."""
        ...

    def count_running(self, batch_id: str) -> int: ...
    def iter_finished(self, batch_id: str) -> Iterator[FinishedRow]: ...

    # prompt templates
    def add_prompt(self, prompt: PromptRecord) -> bool:
        """False if the project already has a prompt with this slug."""
        ...

    def get_prompt(self, project_id: str, slug: str) -> PromptRecord | None: ...
    def list_prompts(self, project_id: str) -> list[PromptRecord]: ...
    def add_prompt_version(
        self, project_id: str, slug: str, messages: list[dict[str, Any]], model_config: dict[str, Any], now: int
    ) -> PromptVersion:
        """The next version number, atomically."""
        ...

    def list_prompt_versions(self, project_id: str, slug: str) -> list[PromptVersion]: ...
    def get_prompt_version(self, project_id: str, slug: str, version: int | None) -> PromptVersion | None:
        """A version, or (None) the published one."""
        ...

    def publish_prompt_version(self, project_id: str, slug: str, version: int) -> bool: ...

    # stored responses (POST /v1/responses with store: true)
    def add_response(self, response: StoredResponse) -> None: ...
    def get_response(self, response_id: str, project_id: str) -> StoredResponse | None: ...
    def delete_response(self, response_id: str, project_id: str) -> bool: ...
    def delete_expired_responses(self, created_before: int, limit: int) -> int:
        """Delete up to `limit` stored responses created before `created_before`, oldest
        first; how many were deleted."""
        ...

    # the worker's side
    def register_worker(self, info: WorkerInfo) -> None: ...
    def heartbeat(self, worker_id: str, now: float) -> bool:
        """False when the worker is no longer registered (it was reaped as dead)."""
        ...

    def list_workers(self) -> list[WorkerInfo]: ...
    def reap_worker(self, worker_id: str) -> int:
        """Forget a dead worker: requeue its running rows and release its batch jobs."""
        ...

    def requeue_orphans(self) -> int:
        """Requeue running rows, and release batch jobs, of workers that are not registered."""
        ...

    def claim_batch_job(self, worker_id: str, now: int) -> BatchJob | None: ...
    def release_batch_job(self, batch_id: str, worker_id: str, wake_at: int) -> None: ...
    def claim_requests(self, worker_id: str, limit: int, now: int) -> list[ClaimedRequest]:
        """Claim up to `limit` lines of runnable batches: requeued rows first, then fresh
        lines from the index (their rows are created `running` under this worker)."""
        ...

    def record_results(self, worker_id: str, results: list[RequestResult], now: int) -> None:
        """Write results of rows this worker still holds; rows it lost are left alone.

        Updates the batch's live counts and usage, meters each line that ran (succeeded
        or failed) with one ledger row (started `latency_ms` before `now`), and moves a
        batch whose every row is done from in_progress to finalizing (stamped `now`),
        in the same transaction.
        ValueError if a result's state is not one a run can end in.
        """
        ...

    # the ledger (core/ledger.py); record_results meters batch lines itself
    def add_ledger_entry(self, entry: LedgerEntry) -> None:
        """Meter a synchronous request (its `id` is assigned here)."""
        ...

    def list_ledger(self, query: LedgerQuery) -> Page[LedgerEntry]:
        """Ledger rows matching `query`, newest first."""
        ...

    def ledger_usage(self, query: LedgerQuery, group_by: tuple[str, ...], bucket_seconds: int) -> list[UsageRow]:
        """Sums of the rows matching `query` (its cursor and limit aside) per bucket of
        `bucket_seconds` (UTC, by started_at), group (`USAGE_GROUPS` names) and kind."""
        ...

    # budgets (core/budgets.py) and /metrics (core/telemetry.py)
    def key_spend(self, key_id: str, since: float | None, after: int = 0, upto: int | None = None) -> float:
        """The cost of the key's ledger rows that started at or after `since` (None: all),
        of those with `after` < id <= `upto` (None: no bound)."""
        ...

    def set_budget_pauses(self, key_ids: list[str], now: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Make the validating and running batches of these keys (the keys that spent their
        budget), and only those, paused for a budget: set `budget_paused_at` to `now` where
        it is unset, clear it everywhere else. The (batch id, key id) of the batches
        (paused, resumed)."""
        ...

    def ledger_max_id(self) -> int:
        """The largest ledger row id (0: none)."""
        ...

    def ledger_totals(self, after: int, upto: int | None) -> list[LedgerTotals]:
        """The sums of the ledger rows with `after` < id <= `upto` (None: no bound) per
        kind, model, backend and status (`LedgerTotals`)."""
        ...

    def batch_gauges(self) -> BatchGauges:
        """Batches per status, budget-paused, and the lines of running batches not done."""
        ...

    # rate limits (core/ratelimit.py): counters shared by every process on the store
    def rate_limit_step(
        self,
        key_id: str,
        now: float,
        count_running: bool,
        step: Callable[[dict[tuple[str, int], tuple[float, float]], int], LimiterWrite],
        wait: bool = True,
    ) -> bool:
        """In one transaction, serialised with every other step of the key: read the key's
        limit levels and (if `count_running`, else 0) its leases unexpired at `now`, call
        `step(levels, running)`, and write what it returns (dropping the key's expired
        leases when it adds one). True when done. With `wait` False the step is taken
        only if it can be at once, without waiting for another writer or a network round
        trip (so that it may run on an event loop); else False, and nothing is done."""
        ...

    def set_batch_pacing(self, batch_id: str, until: float | None, note: str | None) -> None:
        """Record that the batch's lines wait for its key's rate limits until `until`, and
        why (None: not waiting)."""
        ...

    def batch_pacing(self, batch_ids: list[str]) -> dict[str, tuple[float, str]]:
        """(until, note) of those of the batches whose pacing is recorded."""
        ...

    # the billing outbox (core/billing.py): Stripe meter events and each attempt to send one
    def add_billing_events(self, events: list[BillingEvent]) -> int:
        """Add the events whose identifier and (project, meter, hour, seq) are new (an
        event computed twice is kept once); how many were added."""
        ...

    def billing_totals(self, since: int) -> list[BillingTotal]:
        """Per project, meter and hour starting at or after `since`: the sum of its
        events' values (whatever their status) and their count."""
        ...

    def claim_billing_event(self, now: float, lease: float) -> BillingEvent | None:
        """The pending event due first at `now` (oldest due first), due again only at
        `now + lease` unless an attempt is recorded first (a claimer that died)."""
        ...

    def record_billing_attempt(self, attempt: BillingAttempt, status: str, next_attempt_at: float) -> None:
        """Log the attempt and, if its event is still pending, count it and move the
        event to `status` (sent: `sent_at` is the attempt's time), due at `next_attempt_at`,
        its last error the attempt's."""
        ...

    def list_billing_events(self, status: str | None, limit: int) -> list[BillingEvent]:
        """Events (of one status, or all), newest first."""
        ...

    def list_billing_attempts(self, identifier: str) -> list[BillingAttempt]:
        """An event's attempts, oldest first."""
        ...

    def retry_failed_billing_events(self, now: float) -> int:
        """Make the failed events pending again, due at `now`; how many."""
        ...

    def billing_summary(self) -> BillingSummary:
        """Events per status, and when the earliest pending one is due."""
        ...

    # browsing (core/browse.py): the console's reads
    def search_batches(self, query: BatchSearch) -> Page[BatchRecord]:
        """Batches matching `query`, active first, then newest first, from `query.offset`."""
        ...

    def list_request_rows(
        self, batch_id: str, state: RequestState | None, after_line: int | None, limit: int
    ) -> Page[RequestRow]:
        """The batch's request rows in line order after `after_line` (lines never claimed
        have none); KeyError if there is no such batch."""
        ...

    # pause, resume and retry links (core/batch_lifecycle.py)
    def pause_batch(self, batch_id: str, now: int) -> bool:
        """Set the batch's `paused_at` to `now` if it is in a status that may be paused
        (`PAUSABLE_STATUSES`) and not paused; no line of a paused batch is claimed.
        False otherwise."""
        ...

    def resume_batch(self, batch_id: str) -> bool:
        """Clear `paused_at` of a paused batch (in a pausable status); False otherwise."""
        ...

    def link_retry(self, batch_id: str, retry_id: str) -> bool:
        """Add `retried_by: retry_id` to the batch's metadata, atomically, unless it has
        a `retried_by` already (False)."""
        ...

    # webhooks (core/webhooks.py); fail_batch and finish_batch write a batch's event and
    # its deliveries in the transaction of the move
    def add_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None: ...
    def list_webhook_endpoints(self, project_id: str) -> list[WebhookEndpoint]:
        """Oldest first."""
        ...

    def get_webhook_endpoint(self, endpoint_id: str, project_id: str) -> WebhookEndpoint | None: ...
    def delete_webhook_endpoint(self, endpoint_id: str, project_id: str) -> bool:
        """Delete it with its deliveries and their attempts; False if the project has no such endpoint."""
        ...

    def batch_event(self, batch_id: str) -> WebhookEvent | None:
        """The event written when the batch ended (None while it runs)."""
        ...

    def claim_webhook_deliveries(self, now: int, limit: int, lease_until: int) -> list[DueDelivery]:
        """Up to `limit` pending deliveries due at `now`, oldest first; each is due again
        at `lease_until` unless an attempt is recorded first (a claimer that died)."""
        ...

    def record_webhook_attempt(
        self, delivery_id: int, attempt: WebhookAttempt, next_attempt_at: int | None, delivered: bool
    ) -> None:
        """Log the attempt and move the delivery on: delivered; pending until
        `next_attempt_at`; or failed for good (`next_attempt_at` None). An attempt
        number already logged changes nothing."""
        ...

    def list_webhook_deliveries(self, endpoint_id: str, project_id: str, limit: int) -> list[WebhookDelivery]:
        """The endpoint's deliveries, newest first, each with its attempts in order."""
        ...


class BlobWriter(Protocol):
    size: int

    def write(self, data: bytes) -> None: ...


class BlobStore(Protocol):
    """Bytes of files, addressed by file id. Writes become visible only on commit."""

    def writer(self, blob_id: str) -> AbstractContextManager[BlobWriter]: ...
    def open(self, blob_id: str) -> BinaryIO: ...
    def read_range(self, blob_id: str, offset: int, length: int) -> bytes: ...
    def delete(self, blob_id: str) -> None: ...


@dataclass(slots=True)
class UpstreamBatch:
    """An upstream's own view of a batch passed through to it."""

    id: str
    status: str  # the OpenAI batch status there
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str = ""  # why it failed validation there, if it did


class UpstreamBatches(Protocol):
    """An upstream's own Files + Batches API, for native passthrough. Blocking calls: they
    run in batch jobs, off the worker's event loop. Raises BackendError when unreachable."""

    def submit(self, lines: Iterable[bytes], endpoint: str, metadata: dict[str, str]) -> str:
        """Upload the request lines as a file and create a batch on it; the batch's id."""
        ...

    def find(self, metadata: dict[str, str]) -> str | None:
        """A live batch created earlier with this metadata (a submit that crashed before
        its id was stored), among the upstream's recent batches."""
        ...

    def retrieve(self, batch_id: str) -> UpstreamBatch: ...
    def cancel(self, batch_id: str) -> UpstreamBatch: ...
    def download(self, file_id: str) -> Iterator[bytes]:
        """A result file's lines."""
        ...


@dataclass(slots=True)
class BackendRequest:
    custom_id: str
    url: str
    body: dict[str, Any]
    interactive: bool = False  # a synchronous API call: served ahead of batch lines
    # a batch line's project and batch: lines of different projects, then of a project's
    # different batches, take turns at a backend
    share: tuple[str, str] = ("", "")
    profile: str | None = None  # the routing profile of the key behind it (core/routing.py); None: none


@dataclass(slots=True)
class BackendResponse:
    """A backend's answer to one request: its HTTP-like status and OpenAI body. A backend
    returns successes (2xx); an error answer travels inside BackendRejectedError."""

    status_code: int
    body: dict[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    cost: float = 0.0  # USD, when the route has a price
    backend: str | None = None  # which backend answered, when a router chose among several


@dataclass(slots=True)
class StreamDelta:
    """A piece of a streamed completion; the last one has the finish reason and usage.

    A stream of an upstream's own `/v1/responses` (a model served natively) is its events:
    each delta holds one, `event` (`type` and the rest of its data, as the upstream wrote
    it), and `text` the text it adds; the last one, `response.completed` (or
    `response.incomplete`, `response.failed`), has the usage."""

    text: str
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    event: dict[str, Any] | None = None
    # the last one's, set by the router: USD of the usage (when priced), and the model and
    # backend that answered (what the request log shows as resolved_model and backend)
    cost: float = 0.0
    model: str | None = None
    backend: str | None = None


class Backend(Protocol):
    """Runs one request line. Raises `core.errors.BackendRejectedError` (holding the answer)
    when it answered with an error, and another `BackendError` when it produced none."""

    name: str

    async def execute(self, request: BackendRequest) -> BackendResponse: ...
    def stream(self, request: BackendRequest) -> AsyncIterator[StreamDelta]:
        """The completion as it is generated. A refusal, or no answer, is raised as
        execute raises it, before the first delta."""
        ...

    def models(self) -> list[str]:
        """Model names this backend serves now (for GET /v1/models)."""
        ...

    async def aclose(self) -> None: ...
