"""The worker: claims request rows from the store, runs them on the backend with bounded
concurrency and retries, and records results in batched transactions. It also claims
batch-level jobs (validation, cancel, expiry, finalization) and watches for dead peers.

Crash safety comes from the store, not from this process: a claimed row stays `running`
under this worker's id until its result is written in the same transaction that updates
the batch counts. If the process dies, its heartbeat stops (or, on the same host, its pid
disappears), a live worker reaps it and the rows go back to the queue; rows whose result
was written are never run again.

The loop never calls the store itself: every store call goes through `_db`, to one
thread of the worker's own. A SQLite write waits for the database lock while a peer
process commits (up to its busy timeout), and on the loop that wait would stall every
request in flight, the heartbeat with them.

Time comes from a `Clock` (expiry, heartbeats, reaping, job wake-ups, retry backoff),
so tests move it instead of waiting; the pacing of flushes and status checks, and the
idle wait for work, use real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import orjson

from batchgate.core.budgets import Budgets
from batchgate.core.clock import Clock, SystemClock
from batchgate.core.errors import BackendError, BackendRejectedError
from batchgate.core.ids import IdSequence
from batchgate.core.input_lines import read_claimed_lines
from batchgate.core.jobs import JobExecutor, ValidationFailures, describe, fail_unvalidatable
from batchgate.core.models import BatchJob, BatchStatus, ClaimedRequest, RequestResult, RequestState
from batchgate.core.pacing import Admission, BatchPacer, Refusal
from batchgate.core.ports import Backend, BackendRequest, BlobStore, Store, WorkerInfo
from batchgate.core.prompts import PromptError, PromptLines
from batchgate.core.ratelimit import Cost, PromptTokens
from batchgate.core.retention import Sweeper
from batchgate.core.scheduling import ReadyLines, lines_ahead
from batchgate.core.webhooks import WebhookDispatcher

log = logging.getLogger("batchgate.worker")
RATE_WINDOW = 0.25  # seconds over which the rate lines finish is measured (_pace_claims)
PROCESS_STARTED = time.time()
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class WorkerConfig:
    concurrency: int = 64
    claim_batch: int = 256  # the most lines one claim takes, and the most claimed ahead of free slots
    claim_ahead_seconds: float = 0.05  # lines claimed ahead, in seconds of work (core/scheduling.lines_ahead)
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    poll_interval: float = 0.1
    heartbeat_interval: float = 2.0
    dead_after: float = 30.0
    flush_interval: float = 0.05
    flush_rows: int = 2000
    drain_timeout: float = 10.0
    status_check_interval: float = 0.5
    sweep_interval: float = 60.0  # seconds of the clock between sweeps of expired files
    budget_check_interval: float = 1.0  # seconds between checks of the keys' budgets (core/budgets.py)
    response_retention: int | None = None  # seconds a stored response is kept (None: for ever)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Worker:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        backend: Backend,
        jobs: JobExecutor,
        config: WorkerConfig | None = None,
        clock: Clock | None = None,
        budgets: Budgets | None = None,
        webhooks: WebhookDispatcher | None = None,
        prompt_tokens: PromptTokens | None = None,
    ):
        self.store = store
        self.budgets = budgets  # pauses the batches of keys that spent their budget
        self.webhooks = webhooks  # delivers the webhook outbox beside the loop
        self.blobs = blobs
        self.backend = backend
        self.jobs = jobs
        self.config = config or WorkerConfig()
        self.clock = clock or SystemClock()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"wrk_{self.host}_{self.pid}_{secrets.token_hex(4)}"
        self.last_tick = 0.0  # time.monotonic() of the loop's last turn (liveness)
        self._request_ids = IdSequence()
        self._inflight: dict[tuple[str, int], asyncio.Task[RequestResult]] = {}
        self._claims: dict[tuple[str, int], ClaimedRequest] = {}
        # lines claimed ahead of a free slot: a slot that frees starts its next line at
        # once (in _on_done) instead of after a store round trip. They are `running`
        # under this worker in the store like the lines in flight, so a crash requeues them.
        # They start in turns across their batches (core/scheduling.ReadyLines)
        self._ready = ReadyLines()
        self._lines: dict[tuple[str, int], bytes] = {}  # input lines of the ready ones, read with their chunk
        self._jobs_due = True  # look for a batch job at the next turn (else every poll_interval)
        self._claiming: asyncio.Future[Any] | None = None  # the claim in flight (_fill)
        # lines claimed ahead of free slots: one per slot until the rate is known (_pace_claims)
        self._ahead = lines_ahead(0, self.config.concurrency, self.config.claim_batch, 0)
        self._finished = 0  # lines finished since _rate_since (time.monotonic())
        self._rate_since = time.monotonic()
        self._queue_empty = False  # the last claim found no line
        self._budgets_checked_at = float("-inf")  # time.monotonic() of the last check of the keys' budgets
        self._stopping = False  # draining or rejoining: claim no more
        self._flushing: asyncio.Task[None] | None = None  # the flush in flight (_flush_soon)
        self._results: list[RequestResult] = []
        self._wake = asyncio.Event()
        self._prompts: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self._store_thread: ThreadPoolExecutor | None = None
        # claims on a thread of their own, where the store writes concurrently: a claim
        # need not wait for a flush of results (on SQLite it would wait for its lock anyway)
        self._claim_thread: ThreadPoolExecutor | None = None
        self._job_task: asyncio.Task[None] | None = None  # the batch job this worker runs
        self._validation_failures = ValidationFailures()
        self.sweeper = Sweeper(store, blobs, self.clock, response_retention=self.config.response_retention)
        self._sweep_task: asyncio.Task[int] | None = None
        # batch lines wait for their key's rate limits (core/pacing.py)
        self.pacer = BatchPacer(store, self.clock, self._db, prompt_tokens)
        self._admissions: dict[tuple[str, int], Admission] = {}
        self._releases: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for work now rather than at the next poll (call from the worker's loop)."""
        self._jobs_due = True
        self._wake.set()

    async def _db(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store call on the worker's store thread: one thread, so the calls keep
        their order and the thread keeps its one connection."""
        return await self._submit(self._store_thread, call, *args, **kwargs)

    @staticmethod
    def _submit(
        thread: ThreadPoolExecutor | None, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[R]:
        """Queue a store call on one of the worker's store threads now; its future."""
        assert thread is not None, "store calls happen while the worker runs"
        return asyncio.get_running_loop().run_in_executor(thread, functools.partial(call, *args, **kwargs))

    # ---- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._wake = asyncio.Event()  # bound to this run's loop
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="batchgate-worker-store")
        if self.store.concurrent_writes:
            self._claim_thread = ThreadPoolExecutor(1, thread_name_prefix="batchgate-worker-claims")
        self._job_task = self._claiming = self._flushing = None
        self._stopping = False
        self._budgets_checked_at = float("-inf")
        webhooks_task: asyncio.Task[None] | None = None
        try:
            await self._db(self.store.register_worker, WorkerInfo(self.id, self.host, self.pid, self.clock.time()))
            log.info("worker %s started (concurrency %d)", self.id, self.config.concurrency)
            if self.webhooks is not None:
                webhooks_task = asyncio.create_task(self.webhooks.run(stop, self._db))
            await self._loop(stop)
        finally:
            if webhooks_task is not None:
                webhooks_task.cancel()  # an attempt cut short is due again when its claim lapses
                await asyncio.gather(webhooks_task, return_exceptions=True)
            await self._drain()
            for thread in (self._store_thread, self._claim_thread):
                if thread is not None:
                    thread.shutdown(wait=False)
            self._store_thread = self._claim_thread = None

    async def _loop(self, stop: asyncio.Event) -> None:
        cfg = self.config
        last_beat = last_reap = last_sweep = 0.0  # on the clock
        last_flush = last_status = last_jobs = 0.0  # on time.monotonic()
        while not stop.is_set():
            now = self.clock.time()
            tick = self.last_tick = time.monotonic()
            try:
                if now - last_beat >= cfg.heartbeat_interval:
                    if not await self._db(self.store.heartbeat, self.id, now):
                        await self._rejoin(now)
                    last_beat = now
                if now - last_reap >= min(cfg.dead_after / 3, 5.0):
                    await self.reap_dead_workers(now)
                    last_reap = now
                # not at every turn (each finished line wakes the loop): when told of a
                # change, after a job or a flush (a batch may be done), else every poll_interval
                if (self._job_task is None or self._job_task.done()) and (
                    self._jobs_due or tick - last_jobs >= cfg.poll_interval
                ):
                    self._jobs_due, last_jobs = False, tick
                    self._job_task = await self._start_job(int(now))
                    if self._job_task is not None:
                        # a batch may have appeared: check its key's budget while it validates
                        self._budgets_checked_at = float("-inf")
                if now - last_sweep >= cfg.sweep_interval and (self._sweep_task is None or self._sweep_task.done()):
                    self._sweep_task = asyncio.create_task(self.sweep_expired_files())
                    last_sweep = now
                if (self._inflight or self._ready) and tick - last_status >= cfg.status_check_interval:
                    await self._abandon_stopped_batches(int(now))
                    last_status = tick
                if self.budgets is not None and not self._budgets_checked(tick):
                    # before claiming: a batch of a key that spent its budget is paused
                    # first, counting what this worker ran but has not recorded yet
                    await self._flush(int(now))
                    last_flush = tick
                    await self._db(self.budgets.enforce, now)
                    self._budgets_checked_at = tick
                self._pace_claims(tick)
                self._fill(from_loop=True)
                if self._results and (len(self._results) >= cfg.flush_rows or tick - last_flush >= cfg.flush_interval):
                    self._flush_soon(int(now))
                    last_flush = tick
            except Exception:
                log.exception("worker loop error; retrying")
                await asyncio.sleep(cfg.poll_interval)
            self._wake.clear()
            timeout = cfg.flush_interval if self._results else cfg.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _settle_store_tasks(self) -> None:
        """Wait for the claim and the flush in flight (their store calls finish anyway)."""
        pending = [t for t in (self._claiming, self._flushing) if t is not None]
        if pending:
            await asyncio.wait(pending)

    async def _rejoin(self, now: float) -> None:
        """We were presumed dead (paused past dead_after) and reaped: our rows and job now
        belong to others. Drop them and come back under a new id."""
        log.warning("worker %s was reaped while alive; dropping %d in-flight rows", self.id, len(self._inflight))
        self._stopping = True  # no claim under the old id from here
        await self._settle_store_tasks()
        for task in self._inflight.values():
            task.cancel()
        self._inflight.clear()
        self._claims.clear()
        self._ready.clear()
        self._lines.clear()
        self._results.clear()
        self.id = f"wrk_{self.host}_{self.pid}_{secrets.token_hex(4)}"
        await self._db(self.store.register_worker, WorkerInfo(self.id, self.host, self.pid, now))
        # what the old id claimed after it was reaped is nobody's: back in the queue now,
        # not at the next reap
        await self._db(self.store.requeue_orphans)
        self._stopping = False

    async def _start_job(self, now: int) -> asyncio.Task[None] | None:
        job = await self._db(self.store.claim_batch_job, self.id, now)
        return asyncio.create_task(self._run_job(job)) if job is not None else None

    async def _run_job(self, job: BatchJob) -> None:
        wake_at = 0
        try:
            wake_at = await self.jobs(job) or 0
            self._validation_failures.succeeded(job)
        except Exception as exc:
            wake_at = int(self.clock.time()) + 5
            if not self._validation_failures.give_up(job, exc):
                log.exception("batch %s: %s job failed; will retry", job.batch.id, job.kind)
            else:
                log.error("batch %s: validation keeps failing (%s); failing the batch", job.batch.id, describe(exc))
                attempts = self._validation_failures.limit
                try:
                    await self._db(fail_unvalidatable, self.store, job, exc, int(self.clock.time()), attempts)
                except Exception:
                    log.exception("batch %s: could not fail the batch; will retry", job.batch.id)
        finally:
            # a no-op when the job ended the batch (which clears the owner itself)
            # by the id that claimed it: a worker that rejoined since has another
            await self._db(self.store.release_batch_job, job.batch.id, job.owner, wake_at)
            self._jobs_due = True  # another may be waiting
            self._wake.set()

    def _pace_claims(self, tick: float) -> None:
        """Size the lines claimed ahead of free slots (`_ahead`) by the rate lines finish.
        At a fast upstream thousands finish a second, and a buffer of one line per slot ran
        dry while a claim waited behind a flush of results: slots sat idle a third of the
        time (bench/RESULTS.md). At a slow one the buffer stays small: claimed lines are
        no other worker's, and a batch claimed later waits for a turn among them."""
        elapsed = tick - self._rate_since
        if elapsed < RATE_WINDOW:
            return
        cfg = self.config
        self._ahead = lines_ahead(self._finished / elapsed, cfg.concurrency, cfg.claim_batch, cfg.claim_ahead_seconds)
        self._finished, self._rate_since = 0, tick

    def _fill(self, from_loop: bool = False) -> None:
        """Start claimed lines while there are free slots, and claim the next chunk in
        the background while there is room for it (one claim at a time). Called at each
        turn of the loop and as lines end. Only the loop's turns claim after a claim that
        found nothing (not every line that ends), and when the keys' budgets are due a
        check, which the loop makes before it claims."""
        room = self._room()
        if (
            self._claiming is None
            and not self._stopping
            and room > 0
            and not ((self._inflight or self._ready) and room < self._ahead // 2)
            and (from_loop or not self._queue_empty)
        ):
            if from_loop or self._budgets_checked(time.monotonic()):
                # submitted now, before the lines started below take the loop
                count, now = min(room, self.config.claim_batch), int(self.clock.time())
                self._claiming = self._submit(self._claim_thread or self._store_thread, self._claim_chunk, count, now)
                self._claiming.add_done_callback(self._claimed)
            else:
                self._wake.set()
        self._start_ready()

    def _budgets_checked(self, tick: float) -> bool:
        """Whether the keys' budgets were checked recently enough to claim more lines."""
        return self.budgets is None or tick - self._budgets_checked_at < self.config.budget_check_interval

    def _room(self) -> int:
        return self.config.concurrency + self._ahead - len(self._inflight) - len(self._ready)

    def _claimed(self, claiming: asyncio.Future[tuple[list[ClaimedRequest], dict[tuple[str, int], bytes]]]) -> None:
        self._claiming = None
        if claiming.cancelled():
            return
        if (exc := claiming.exception()) is not None:
            log.error("worker %s: claiming lines failed; retrying: %r", self.id, exc)
            return
        claims, lines = claiming.result()
        self._queue_empty = not claims
        self._lines.update(lines)
        self._ready.extend(claims)
        self._fill()  # the next chunk, if there is room for it

    def _claim_chunk(self, count: int, now: int) -> tuple[list[ClaimedRequest], dict[tuple[str, int], bytes]]:
        """Claim lines and read their input in a few reads (on the store thread, in one
        call: a flush queued between the two would hold the claimed lines back)."""
        claims = self.store.claim_requests(self.id, count, now)
        return claims, read_claimed_lines(self.blobs, claims) if claims else {}

    def _start_ready(self) -> None:
        """Start claimed lines while there are free slots."""
        while self._ready and len(self._inflight) < self.config.concurrency:
            claim = self._ready.pop()
            key = (claim.batch_id, claim.line)
            task = asyncio.create_task(self._execute(claim, self._lines.pop(key, None)))
            task.add_done_callback(functools.partial(self._on_done, key))
            self._inflight[key] = task
            self._claims[key] = claim

    def _on_done(self, key: tuple[str, int], task: asyncio.Task[RequestResult]) -> None:
        if (admission := self._admissions.pop(key, None)) is not None:
            self._release(admission, task)
        if self._inflight.get(key) is not task:
            return  # abandoned (cancel, expiry, rejoin): its outcome is settled elsewhere
        del self._inflight[key]
        self._finished += 1
        self._fill()
        claim = self._claims.pop(key)
        if task.cancelled():
            return  # drain: the row goes back to the queue
        exc = task.exception()
        if exc is None:
            self._results.append(task.result())
        else:  # a bug, not the backend's failure; the line must still end with a result
            log.error("batch %s line %d: %r", claim.batch_id, claim.line, exc, exc_info=exc)
            self._results.append(
                RequestResult(
                    claim.batch_id, claim.line, RequestState.FAILED, claim.attempts, self._request_ids.next(),
                    error_code="internal_error", error_message=f"{type(exc).__name__}: {exc}",
                )
            )  # fmt: skip
        # the loop flushes the first result on time and flushes early when many wait;
        # it is not woken by every line (a turn per line costs more than the line)
        waiting = len(self._results)
        if waiting == 1 or waiting >= self.config.flush_rows:
            self._wake.set()

    def _flush_soon(self, now: int) -> None:
        """Record the results so far in the background (one flush at a time): the loop
        goes on running lines while the store writes."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(now))
            self._flushing.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("worker %s: recording results failed; will retry: %r", self.id, exc)
        self._wake.set()

    async def _flush(self, now: int) -> None:
        """Record the results so far, after a flush still in flight."""
        if self._flushing is not None and self._flushing is not asyncio.current_task():
            await asyncio.wait([self._flushing])  # its failure is logged by _flushed
        results, self._results = self._results, []
        if not results:
            return
        try:
            await self._db(self.store.record_results, self.id, results, now)
        except BaseException:
            self._results[:0] = results  # keep them for the next flush; the rows are still ours
            raise
        self._jobs_due = True  # a batch whose last lines these were now waits for its output files

    def _release(self, admission: Admission, task: asyncio.Task[RequestResult]) -> None:
        """Give back the line's parallel lease and settle its tokens, off the loop."""
        if not self.pacer.needs_release(admission):
            return
        result = None if task.cancelled() or task.exception() else task.result()
        used = Cost(1, result.input_tokens, result.output_tokens) if result is not None else None
        release = asyncio.create_task(self.pacer.release(admission, used))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)

    async def _abandon_stopped_batches(self, now: int) -> None:
        """Stop work on batches that were cancelled or expired while their rows ran here."""
        for batch_id in {key[0] for key in self._inflight} | self._ready.batch_ids():
            batch = await self._db(self.store.get_batch, batch_id, None)
            if batch is None:
                continue
            if batch.status == BatchStatus.CANCELLING:
                state, code, msg = (
                    RequestState.CANCELLED,
                    "batch_cancelled",
                    "The batch was cancelled while this request ran.",
                )
            elif batch.status == BatchStatus.IN_PROGRESS and batch.expires_at <= now:
                state, code, msg = (
                    RequestState.EXPIRED,
                    "batch_expired",
                    "The batch's completion window ended while this request ran.",
                )
            else:
                continue
            waiting = self._ready.take(batch_id)
            for c in waiting:
                self._lines.pop((batch_id, c.line), None)
            for key in [k for k in self._inflight if k[0] == batch_id]:
                self._inflight.pop(key).cancel()
                waiting.append(self._claims.pop(key))
            for claim in waiting:
                self._results.append(
                    RequestResult(
                        batch_id,
                        claim.line,
                        state,
                        claim.attempts,
                        self._request_ids.next(),
                        error_code=code,
                        error_message=msg,
                    )
                )
        if self._results:
            await self._flush(now)

    async def _drain(self) -> None:
        """Graceful stop: finish in-flight rows within a bound, record them, give back the rest."""
        self._stopping = True
        await self._settle_store_tasks()
        self._ready.clear()  # not started: reap_worker below gives them back to the queue
        self._lines.clear()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.config.drain_timeout)
            for task in self._inflight.values():
                task.cancel()
        if self._job_task is not None:
            await self._job_task  # jobs are bounded and idempotent; let the current one end
        try:
            await self._flush(int(self.clock.time()))
            released = await self._db(self.store.reap_worker, self.id)
            if released:
                log.info("worker %s released %d unfinished rows to the queue", self.id, released)
        except Exception:
            log.exception("worker %s: could not record its last results; peers will requeue them", self.id)
        log.info("worker %s stopped", self.id)

    async def sweep_expired_files(self) -> int:
        """Delete every expired file, a chunk per store call, beside the claiming (a
        sweep of thousands of files never holds up a batch line or an API call)."""
        total = 0
        try:
            while (deleted := await self._db(self.sweeper.sweep)) > 0:
                total += deleted
                if deleted < self.sweeper.chunk:
                    break
        except Exception:
            log.exception("sweeping expired files failed; retrying at the next sweep")
        return total

    async def reap_dead_workers(self, now: float) -> None:
        for info in await self._db(self.store.list_workers):
            if info.id != self.id and self._is_dead(info, now):
                requeued = await self._db(self.store.reap_worker, info.id)
                log.warning("reaped dead worker %s; %d rows back in the queue", info.id, requeued)
        if orphans := await self._db(self.store.requeue_orphans):
            log.warning("%d rows of unregistered workers back in the queue", orphans)

    def _is_dead(self, info: WorkerInfo, now: float) -> bool:
        if now - info.heartbeat_at > self.config.dead_after:
            return True
        if info.host != self.host:
            return False
        # same host: a missing pid means it died; our own pid with a heartbeat from before
        # this process started is a previous incarnation (containers reuse pid 1)
        if info.pid == self.pid:
            return info.heartbeat_at < PROCESS_STARTED
        return not _pid_alive(info.pid)

    # ---- one request ------------------------------------------------------------------

    async def _execute(self, claim: ClaimedRequest, raw_line: bytes | None = None) -> RequestResult:
        """Run one claimed line (`raw_line`: its input bytes, when read with its chunk)."""
        cfg = self.config
        request_id = self._request_ids.next()
        started = time.perf_counter()
        attempts = claim.attempts

        custom_id: str | None = None

        def failed(code: str, message: str) -> RequestResult:
            return RequestResult(
                claim.batch_id, claim.line, RequestState.FAILED, attempts, request_id, custom_id,
                error_code=code, error_message=message, latency_ms=int((time.perf_counter() - started) * 1000),
                backend=self.backend.name,
            )  # fmt: skip

        if attempts > cfg.max_attempts:
            return failed(
                "max_attempts_exceeded",
                f"The request was attempted {attempts - 1} times without a result.",
            )
        try:
            if raw_line is None:
                raw_line = self.blobs.read_range(claim.input_file_id, claim.offset, claim.length)
            line = orjson.loads(raw_line)
            custom_id, body = line["custom_id"], line["body"]
        except Exception as exc:
            log.exception("batch %s line %d: cannot read input", claim.batch_id, claim.line)
            return failed("input_unreadable", f"The input line could not be read: {exc}")
        if "prompt_slug" in body:
            try:
                # on the store thread: rendering reads the prompt's version the first time
                body = await self._db(self._render_prompt, claim.batch_id, body)
            except PromptError as exc:
                return failed(exc.code, exc.message)
        admitted = await self.pacer.admit(claim.batch_id, body, claim.endpoint)  # waits for the key's rate limits
        if isinstance(admitted, Refusal):
            return failed("rate_limited", admitted.message)
        if admitted is not None:
            self._admissions[(claim.batch_id, claim.line)] = admitted
        profile = await self.pacer.routing_profile(claim.batch_id)  # the batch key's routing profile
        request = BackendRequest(
            custom_id, claim.endpoint, body, share=(claim.project_id, claim.batch_id), profile=profile
        )
        while True:
            try:
                response = await self.backend.execute(request)
            except BackendRejectedError as exc:  # an answer all the same: the line's response
                response = exc.response
            except BackendError as exc:
                if exc.transient and attempts < cfg.max_attempts:
                    await self.clock.sleep(self._backoff(attempts, exc.retry_after))
                    attempts += 1
                    continue
                return failed(exc.code or BackendError.default_code, exc.message)
            except Exception as exc:
                log.exception("batch %s line %d: backend crashed", claim.batch_id, claim.line)
                return failed("internal_error", f"{type(exc).__name__}: {exc}")
            ok = 200 <= response.status_code < 300
            return RequestResult(
                claim.batch_id,
                claim.line,
                RequestState.SUCCEEDED if ok else RequestState.FAILED,
                attempts,
                request_id,
                custom_id,
                status_code=response.status_code,
                body=orjson.dumps(response.body),
                input_tokens=response.input_tokens,
                output_tokens=response.output_tokens,
                cost=response.cost,
                latency_ms=int((time.perf_counter() - started) * 1000),
                backend=response.backend or self.backend.name,
                model=response.model or body.get("model"),
                requested_model=body.get("model") if isinstance(body.get("model"), str) else None,
            )

    def _render_prompt(self, batch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A prompt line's body, rendered in its batch's project (reads the store: call it
        on the store thread). The renderer is made once per batch (the batch's project is
        read once, not per line), and its versions are resolved once: a batch's lines
        without a version all use the version published when its first one ran here."""
        if batch_id not in self._prompts:
            if len(self._prompts) > 256:
                self._prompts.clear()
            batch = self.store.get_batch(batch_id, None)
            self._prompts[batch_id] = PromptLines(self.store).checker(batch.project_id if batch else "")
        return self._prompts[batch_id](body)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            return min(max(retry_after, 0.0), cfg.backoff_max)
        delay = min(cfg.backoff_max, cfg.backoff_base * 2 ** (attempts - 1))
        return delay * random.uniform(0.5, 1.0)  # jitter spreads retries of many rows apart
