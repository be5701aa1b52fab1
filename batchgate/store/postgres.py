"""The PostgreSQL store: one database shared by any number of API and worker processes
on any number of hosts (`BATCHGATE_DATABASE_URL=postgresql://...`).

Same schema and migration history as the SQLite store (see `store/ddl.py`); the
differences are in how concurrent writers meet. Workers claim lines with
`SELECT ... FOR UPDATE SKIP LOCKED` on the batch rows (a batch's claim cursor is taken
by one worker at a time; others move on to other batches, never wait), batch jobs with
the same skip, and every write that makes work appear (a new batch, lines to run, rows
requeued, a batch to finalize or cancel) sends a NOTIFY on `WAKE_CHANNEL` in its
transaction, so idle workers listening there (`PostgresWakeups`) look at once instead
of polling. Connections come from a psycopg pool; each store call is one transaction.
"""

from __future__ import annotations

import enum
import logging
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from batchgate.core.billing import BillingAttempt, BillingEvent, BillingSummary, BillingTotal
from batchgate.core.bodies import BodySettings, RequestBodies
from batchgate.core.browse import BatchSearch, RequestRow
from batchgate.core.errors import InsufficientStorageError, JobLostError
from batchgate.core.ids import new_id
from batchgate.core.ledger import METERED_STATES, LedgerEntry, LedgerQuery, UsageRow
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
from batchgate.core.ports import Page, WorkerInfo
from batchgate.core.scheduling import plan_claims
from batchgate.core.states import (
    ACCEPTS_LINES,
    ACTIVE_STATUSES,
    JOB_OF_STATUS,
    RESULT_STATES,
    RUNNABLE_STATUS,
    TERMINAL_STATUSES,
    batch_sources,
    job_kind,
    request_sources,
    settle_sources,
)
from batchgate.core.telemetry import BatchGauges, LedgerTotals
from batchgate.core.webhooks import DueDelivery, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from batchgate.store import (
    billing_sql,
    bodies_sql,
    browse_sql,
    budgets_sql,
    keys_sql,
    ledger_sql,
    lifecycle_sql,
    metrics_sql,
    ratelimit_sql,
    responses_sql,
    rollup_sql,
    scheduling_sql,
    webhooks_sql,
)
from batchgate.store.migrate import upgrade_postgres

log = logging.getLogger(__name__)

LINE_BITS = 32
LINE_MASK = (1 << LINE_BITS) - 1
WAKE_CHANNEL = "batchgate_work"

BATCH_COLUMNS = (
    "id, project_id, endpoint, input_file_id, completion_window, status, created_at, expires_at, "
    "metadata, errors, output_file_id, error_file_id, in_progress_at, finalizing_at, completed_at, "
    "failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, input_tokens, "
    "output_tokens, priority, source, cost, upstream, upstream_batch_id, operation, output_expires_after, key_id, "
    "paused_at, budget_paused_at"
)
FILE_COLUMNS = "id, project_id, purpose, filename, bytes, created_at, expires_at, key_id"
PROMPT_COLUMNS = "project_id, slug, name, description, created_at, published_version"
_NOTIFY = f"SELECT pg_notify('{WAKE_CHANNEL}', '')"

_RUNNING = RequestState.RUNNING.value
_QUEUED = RequestState.QUEUED.value


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _needed(file_id: str) -> str:
    """SQL true while a batch needs the file `file_id` (an SQL expression) names: what
    `BatchRecord.needs_file` says, for every batch at once."""
    return (
        f"(EXISTS (SELECT 1 FROM batches WHERE input_file_id = {file_id} AND {_is('status', ACTIVE_STATUSES)}) "
        f"OR EXISTS (SELECT 1 FROM batches WHERE source = 'operation' AND {file_id} IN "
        "(input_file_id, output_file_id, error_file_id, operation::jsonb ->> 'items_file_id')))"
    )


def _in_use(cur: psycopg.Cursor[Any], file_id: str) -> bool:
    row = cur.execute(f"SELECT {_needed('%(id)s')}", {"id": file_id}).fetchone()
    return row is not None and bool(row[0])


def _is(column: str, states: Iterable[enum.StrEnum]) -> str:
    """A set of states from core/states.py as SQL. Inlined as literals, not bound: the
    planner uses the partial indexes (`requests_running`, `requests_queued`) only when
    the query names their predicate's literal."""
    values = sorted(f"'{state.value}'" for state in states)
    if not values:
        return "false"  # nothing leads there
    return f"{column} = {values[0]}" if len(values) == 1 else f"{column} IN ({', '.join(values)})"


def _json(value: Any) -> str | None:
    return orjson.dumps(value).decode() if value is not None else None


def _batch(row: Sequence[Any]) -> BatchRecord:
    errors = orjson.loads(row[9]) if row[9] else None
    return BatchRecord(
        id=row[0], project_id=row[1], endpoint=row[2], input_file_id=row[3], completion_window=row[4],
        status=BatchStatus(row[5]), created_at=row[6], expires_at=row[7],
        metadata=orjson.loads(row[8]) if row[8] else None,
        errors=[BatchError(**e) for e in errors] if errors is not None else None,
        output_file_id=row[10], error_file_id=row[11], in_progress_at=row[12], finalizing_at=row[13],
        completed_at=row[14], failed_at=row[15], expired_at=row[16], cancelling_at=row[17],
        cancelled_at=row[18], total=row[19], completed=row[20], failed=row[21], input_tokens=row[22],
        output_tokens=row[23], priority=row[24], source=row[25], cost=row[26],
        upstream=row[27], upstream_batch_id=row[28], operation=orjson.loads(row[29]) if row[29] else None,
        output_expires_after=row[30], key_id=row[31], paused_at=row[32], budget_paused_at=row[33],
    )  # fmt: skip


def _prompt_version(row: Sequence[Any]) -> PromptVersion:
    return PromptVersion(row[0], row[1], orjson.loads(row[2]), orjson.loads(row[3]), row[4])


class PostgresStore:
    concurrent_writes = True  # row locks: a claim and a flush of results run at once

    def __init__(self, url: str, pool_size: int = 10, migrate: bool = True):
        self.url = url
        if migrate:
            upgrade_postgres(url)
        # no check of a connection on every checkout (a round trip per store call): one
        # that broke while idle (a database restart) fails its call once and is replaced
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, name="batchgate")
        self._pks: dict[str, int] = {}
        self._chunk_cache: dict[tuple[int, int], array[int]] = {}

    # ---- connections --------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except pg_errors.DiskFull as exc:
            raise InsufficientStorageError(
                "The database's disk is full: nothing was written. Free space and retry."
            ) from exc

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._tx() as cur:
            return cur.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._tx() as cur:
            return cur.execute(sql, params).fetchall()

    def close(self) -> None:
        self._pool.close()

    def ping(self) -> None:
        self._one("SELECT 1")

    def _pk(self, batch_id: str) -> int:
        pk = self._pks.get(batch_id)
        if pk is None:
            row = self._one("SELECT pk FROM batches WHERE id = %s", (batch_id,))
            if row is None:
                raise KeyError(batch_id)
            pk = self._pks[batch_id] = row[0]
        return pk

    def _range(self, batch_id: str) -> tuple[int, int]:
        base = self._pk(batch_id) << LINE_BITS
        return base, base | LINE_MASK

    # ---- projects and keys --------------------------------------------------------

    def ensure_project(self, name: str, now: int) -> Project:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO projects (id, name, created_at) VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (new_id("proj_"), name, now),
            )
            row = cur.execute("SELECT id, name, created_at FROM projects WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return Project(*row)

    def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        with self._tx() as cur:
            cur.execute(
                keys_sql.insert_sql("%s"),
                keys_sql.insert_params(key, key_hash),
            )

    _KEY_SELECT = keys_sql.KEY_SELECT

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        row = self._one(self._KEY_SELECT + " WHERE k.key_hash = %s AND k.revoked_at IS NULL", (key_hash,))
        return keys_sql.api_key(row) if row else None

    def list_api_keys(self) -> list[ApiKey]:
        return [keys_sql.api_key(row) for row in self._all(self._KEY_SELECT + " ORDER BY k.created_at, k.id")]

    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self._one(self._KEY_SELECT + " WHERE k.id = %s", (key_id,))
        return keys_sql.api_key(row) if row else None

    def update_api_key(self, key: ApiKey) -> bool:
        with self._tx() as cur:
            cur.execute(keys_sql.update_sql("%s"), keys_sql.update_params(key))
            return cur.rowcount > 0

    def list_projects(self) -> list[Project]:
        return [Project(*r) for r in self._all("SELECT id, name, created_at FROM projects ORDER BY name")]

    def set_project_weight(self, project_id: str, weight: float) -> bool:
        with self._tx() as cur:
            cur.execute(scheduling_sql.set_weight_sql("%s"), (weight, project_id))
            return cur.rowcount > 0

    def project_weights(self) -> dict[str, float]:
        return {pid: float(w) for pid, w in self._all(scheduling_sql.WEIGHTS_SQL, ())}

    def set_project_bodies(self, project_id: str, settings: BodySettings) -> bool:
        with self._tx() as cur:
            cur.execute(bodies_sql.set_settings_sql("%s"), bodies_sql.set_settings_params(project_id, settings))
            return cur.rowcount > 0

    def project_bodies(self, project_id: str) -> BodySettings:
        return bodies_sql.settings(self._one(bodies_sql.settings_sql("%s"), (project_id,)))

    def add_request_bodies(self, ledger_id: int, bodies: RequestBodies) -> None:
        with self._tx() as cur:
            cur.execute(bodies_sql.insert_sql("%s"), bodies_sql.insert_params(ledger_id, bodies))

    def get_request_bodies(self, ledger_id: int) -> RequestBodies | None:
        return bodies_sql.bodies(self._one(bodies_sql.select_sql("%s"), (ledger_id,)))

    def revoke_api_key(self, key_id: str, now: int) -> bool:
        with self._tx() as cur:
            cur.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", (now, key_id))
            return cur.rowcount > 0

    # ---- files --------------------------------------------------------------------

    def add_file(self, file: FileRecord) -> None:
        with self._tx() as cur:
            self._insert_file(cur, file)

    @staticmethod
    def _insert_file(cur: psycopg.Cursor[Any], f: FileRecord) -> None:
        cur.execute(
            f"INSERT INTO files ({FILE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET project_id = EXCLUDED.project_id, purpose = EXCLUDED.purpose, "
            "filename = EXCLUDED.filename, bytes = EXCLUDED.bytes, created_at = EXCLUDED.created_at, "
            "expires_at = EXCLUDED.expires_at, key_id = EXCLUDED.key_id",
            (f.id, f.project_id, f.purpose, f.filename, f.bytes, f.created_at, f.expires_at, f.key_id),
        )

    def get_file(self, file_id: str, project_id: str | None) -> FileRecord | None:
        row = self._one(f"SELECT {FILE_COLUMNS} FROM files WHERE id = %s", (file_id,))
        if row is None or (project_id is not None and row[1] != project_id):
            return None
        return FileRecord(*row)

    def list_files(
        self, project_id: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page[FileRecord]:
        sql = f"SELECT {FILE_COLUMNS} FROM files WHERE project_id = %s"
        params: list[object] = [project_id]
        if purpose:
            sql += " AND purpose = %s"
            params.append(purpose)
        if after is not None:
            # another project's id finds no pk, exactly like an unknown id (an empty page)
            sql += f" AND pk {'<' if order == 'desc' else '>'} (SELECT pk FROM files WHERE id = %s AND project_id = %s)"
            params += [after, project_id]
        sql += f" ORDER BY pk {'DESC' if order == 'desc' else 'ASC'} LIMIT %s"
        params.append(limit + 1)
        rows = self._all(sql, params)
        return Page([FileRecord(*r) for r in rows[:limit]], len(rows) > limit)

    def delete_file(self, file_id: str, project_id: str) -> bool:
        with self._tx() as cur:
            # the row lock waits for an add_batch holding the file (FOR SHARE) to commit; the
            # check after it is a statement of its own, so it sees that batch
            cur.execute("SELECT 1 FROM files WHERE id = %s AND project_id = %s FOR UPDATE", (file_id, project_id))
            if cur.fetchone() is None or _in_use(cur, file_id):
                return False
            cur.execute("DELETE FROM files WHERE id = %s", (file_id,))
            return True

    def delete_expired_files(self, now: int, limit: int) -> list[FileRecord]:
        with self._tx() as cur:
            # SKIP LOCKED: two sweeping workers share the due files instead of waiting on each other
            cur.execute(
                f"DELETE FROM files WHERE id IN (SELECT id FROM files f WHERE expires_at <= %s AND NOT {_needed('f.id')} "
                f"ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {FILE_COLUMNS}",
                (now, limit),
            )
            return [FileRecord(*r) for r in cur.fetchall()]

    def file_in_use(self, file_id: str) -> bool:
        with self._tx() as cur:
            return _in_use(cur, file_id)

    # ---- batches ------------------------------------------------------------------

    def add_batch(self, b: BatchRecord) -> bool:
        items = b.operation.get("items_file_id") if b.operation else None
        with self._tx() as cur:
            # FOR SHARE: a delete_file of these files waits for this transaction (see there);
            # one that went first has deleted the row, which this then does not find
            present = "SELECT 1 FROM files WHERE id = %s AND project_id = %s FOR SHARE"
            for file_id in (f for f in (b.input_file_id, items) if f):
                if cur.execute(present, (file_id, b.project_id)).fetchone() is None:
                    return False
            cur.execute(
                "INSERT INTO batches (id, project_id, endpoint, input_file_id, completion_window, status, "
                "created_at, expires_at, metadata, priority, source, operation, output_expires_after, key_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    b.id, b.project_id, b.endpoint, b.input_file_id, b.completion_window, b.status.value,
                    b.created_at, b.expires_at, _json(b.metadata or None), b.priority, b.source,
                    _json(b.operation or None), b.output_expires_after, b.key_id,
                ),
            )  # fmt: skip
            cur.execute(_NOTIFY)  # its validation job
        return True

    def get_batch(self, batch_id: str, project_id: str | None) -> BatchRecord | None:
        row = self._one(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = %s", (batch_id,))
        if row is None or (project_id is not None and row[1] != project_id):
            return None
        return _batch(row)

    def list_batches(
        self, project_id: str, after: str | None, limit: int, source: str | None = None
    ) -> Page[BatchRecord]:
        sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE project_id = %s"
        params: list[object] = [project_id]
        if source is not None:
            sql += " AND source = %s"
            params.append(source)
        if after is not None:
            sql += " AND pk < (SELECT pk FROM batches WHERE id = %s AND project_id = %s)"
            params += [after, project_id]
        rows = self._all(sql + " ORDER BY pk DESC LIMIT %s", (*params, limit + 1))
        return Page([_batch(r) for r in rows[:limit]], len(rows) > limit)

    def start_batch(self, batch_id: str, total: int, now: int, owner: str, upstream: str | None = None) -> bool:
        starts = _is("status", batch_sources(BatchStatus.IN_PROGRESS))
        with self._tx() as cur:
            # a batch cancelled while it validated still gets its lines, to settle as cancelled
            cur.execute(
                "UPDATE batches SET total = %s, claim_cursor = 0, upstream = %s, "
                f"status = CASE WHEN {starts} THEN %s ELSE status END, "
                f"in_progress_at = CASE WHEN {starts} THEN %s ELSE in_progress_at END "
                f"WHERE id = %s AND owner = %s AND {_is('status', ACCEPTS_LINES)}",
                (total, upstream, BatchStatus.IN_PROGRESS.value, now, batch_id, owner),
            )
            if cur.rowcount:
                cur.execute(_NOTIFY)  # lines to claim
            return cur.rowcount > 0

    def set_upstream_batch(self, batch_id: str, owner: str, upstream_batch_id: str) -> None:
        with self._tx() as cur:
            self._check_owner(cur, self._pk(batch_id), owner)
            cur.execute("UPDATE batches SET upstream_batch_id = %s WHERE id = %s", (upstream_batch_id, batch_id))

    def mirror_counts(self, batch_id: str, owner: str, completed: int, failed: int) -> None:
        with self._tx() as cur:
            self._check_owner(cur, self._pk(batch_id), owner)
            cur.execute("UPDATE batches SET completed = %s, failed = %s WHERE id = %s", (completed, failed, batch_id))

    def import_results(
        self, batch_id: str, owner: str, rows: list[tuple[int, int, RequestResult]], done: bool, now: int
    ) -> None:
        pk = self._pk(batch_id)
        low, high = self._range(batch_id)
        columns = (
            'id, "offset", length, state, attempts, request_id, custom_id, status_code, result, error_code, '
            "error_message, input_tokens, output_tokens, cost, latency_ms, backend, model"
        )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns.split(", ")[1:])
        with self._tx() as cur:
            self._check_owner(cur, pk, owner)
            cur.executemany(
                f"INSERT INTO requests ({columns}) VALUES ({', '.join(['%s'] * 17)}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                [
                    (
                        (pk << LINE_BITS) | r.line, offset, length, r.state.value, r.attempts, r.request_id,
                        r.custom_id, r.status_code, r.body, r.error_code, r.error_message, r.input_tokens,
                        r.output_tokens, r.cost, r.latency_ms, r.backend, r.model,
                    )
                    for offset, length, r in rows
                ],
            )  # fmt: skip
            metered = [ledger_sql.batch_params(r, pk, now) for _, _, r in rows if r.state in METERED_STATES]
            if metered:
                rollup_sql.add_batch_lines(cur, "%s", rollup_sql.new_lines(cur, "%s", batch_id, metered))
                cur.executemany(ledger_sql.imported_insert_sql("%s"), metered)
            cur.execute(
                "UPDATE batches SET (completed, failed, input_tokens, output_tokens, cost) = ("
                "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed'), "
                "coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint, "
                "coalesce(sum(cost), 0) FROM requests WHERE id BETWEEN %s AND %s) WHERE pk = %s",
                (low, high, pk),
            )
            if done:
                cur.execute("UPDATE batches SET claim_cursor = total WHERE pk = %s", (pk,))
                self._to_finalizing(cur, pk, now)

    def fail_batch(self, batch_id: str, errors: list[BatchError], now: int, owner: str) -> bool:
        data = _json([{"code": e.code, "message": e.message, "line": e.line, "param": e.param} for e in errors])
        with self._tx() as cur:
            cur.execute(
                "UPDATE batches SET status = %s, failed_at = %s, errors = %s, owner = NULL "
                f"WHERE id = %s AND {_is('status', batch_sources(BatchStatus.FAILED))} AND owner = %s",
                (BatchStatus.FAILED.value, now, data, batch_id, owner),
            )
            if not cur.rowcount:
                return False
            webhooks_sql.enqueue(cur, "%s", batch_id, BatchStatus.FAILED, now)
            return True

    def request_cancel(self, batch_id: str, now: int) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE batches SET status = %s, cancelling_at = %s, wake_at = 0 "
                f"WHERE id = %s AND {_is('status', batch_sources(BatchStatus.CANCELLING))}",
                (BatchStatus.CANCELLING.value, now, batch_id),
            )
            if cur.rowcount:
                cur.execute(_NOTIFY)  # its cancel job
            return cur.rowcount > 0

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
        with self._tx() as cur:
            cur.execute(
                f"UPDATE batches SET status = %s, {status.value}_at = %s, output_file_id = %s, error_file_id = %s, "
                "completed = %s, failed = %s, total = %s, owner = NULL "
                f"WHERE id = %s AND owner = %s AND {_is('status', batch_sources(status))}",
                (
                    status.value, now, output_file_id, error_file_id, completed, failed, completed + failed,
                    batch_id, owner,
                ),
            )  # fmt: skip
            if not cur.rowcount:
                return False
            for f in files:
                self._insert_file(cur, f)
            webhooks_sql.enqueue(cur, "%s", batch_id, status, now)
            return True

    # ---- request rows -------------------------------------------------------------

    def add_lines(self, batch_id: str, lines: LineIndex, owner: str) -> None:
        pk = self._pk(batch_id)
        with self._tx() as cur:
            self._check_owner(cur, pk, owner)
            row = cur.execute(
                "SELECT coalesce(sum(count), 0)::bigint FROM line_chunks WHERE batch_pk = %s", (pk,)
            ).fetchone()
            assert row is not None
            cur.execute(
                "INSERT INTO line_chunks (batch_pk, first, count, data) VALUES (%s, %s, %s, %s)",
                (pk, row[0], len(lines) // 3, lines.tobytes()),
            )

    @staticmethod
    def _check_owner(cur: psycopg.Cursor[Any], pk: int, owner: str) -> None:
        # FOR SHARE: the job cannot change hands before this transaction ends
        row = cur.execute("SELECT owner FROM batches WHERE pk = %s FOR SHARE", (pk,)).fetchone()
        if row is None or row[0] != owner:
            raise JobLostError(f"batch job now belongs to {row[0] if row else None!r}, not {owner!r}")

    def _lines(self, cur: psycopg.Cursor[Any], pk: int, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(line, offset, length) for positions [start, stop) of a batch's line index."""
        firsts = cur.execute(
            "SELECT first FROM line_chunks WHERE batch_pk = %s AND first < %s AND first + count > %s ORDER BY first",
            (pk, stop, start),
        ).fetchall()
        for (first,) in firsts:
            chunk = self._chunk_cache.get((pk, first))
            if chunk is None:  # fetched once: a chunk is a few hundred kB, a claim a few hundred lines of it
                row = cur.execute(
                    "SELECT data FROM line_chunks WHERE batch_pk = %s AND first = %s", (pk, first)
                ).fetchone()
                assert row is not None
                chunk = array("q")
                chunk.frombytes(row[0])
                self._chunk_cache.clear()  # claims walk forward: the last chunk is all we reuse
                self._chunk_cache[(pk, first)] = chunk
            lo, hi = max(start - first, 0), min(stop - first, len(chunk) // 3)
            for i in range(3 * lo, 3 * hi, 3):
                yield chunk[i], chunk[i + 1], chunk[i + 2]

    def clear_requests(self, batch_id: str, owner: str) -> None:
        pk = self._pk(batch_id)
        with self._tx() as cur:
            self._check_owner(cur, pk, owner)
            cur.execute("DELETE FROM requests WHERE id BETWEEN %s AND %s", self._range(batch_id))
            cur.execute("DELETE FROM line_chunks WHERE batch_pk = %s", (pk,))
        self._chunk_cache.clear()

    def settle_unfinished(
        self, batch_id: str, state: RequestState, code: str, message: str, include_running: bool
    ) -> int:
        sources = settle_sources(state, include_running)  # ValueError for a state lines cannot be settled as
        pk = self._pk(batch_id)
        base = pk << LINE_BITS
        with self._tx() as cur:
            # the batch row first, as claims do: no claim runs on this batch meanwhile
            row = cur.execute("SELECT claim_cursor, total FROM batches WHERE pk = %s FOR UPDATE", (pk,)).fetchone()
            assert row is not None
            cursor, total = row
            cur.execute(
                "UPDATE requests SET state = %s, error_code = %s, error_message = %s, worker_id = NULL "
                f"WHERE id BETWEEN %s AND %s AND {_is('state', sources)}",
                (state.value, code, message, *self._range(batch_id)),
            )
            settled = cur.rowcount
            if cursor is not None and cursor < total:
                ids, offsets, lengths = [], [], []
                for line, offset, length in self._lines(cur, pk, cursor, total):
                    ids.append(base | line)
                    offsets.append(offset)
                    lengths.append(length)
                # DO NOTHING: a passed-through batch's lines may have rows its upstream answered
                cur.execute(
                    'INSERT INTO requests (id, "offset", length, state, error_code, error_message) '
                    "SELECT i, o, l, %s, %s, %s FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS t(i, o, l) "
                    "ON CONFLICT (id) DO NOTHING",
                    (state.value, code, message, ids, offsets, lengths),
                )
                settled += cur.rowcount
            cur.execute("UPDATE batches SET claim_cursor = total, requeued = 0 WHERE pk = %s", (pk,))
            return settled

    def count_running(self, batch_id: str) -> int:
        row = self._one(
            f"SELECT count(*) FROM requests WHERE state = '{_RUNNING}' AND id BETWEEN %s AND %s",
            self._range(batch_id),
        )
        assert row is not None
        return int(row[0])

    def iter_finished(self, batch_id: str) -> Iterator[FinishedRow]:
        low, high = self._range(batch_id)
        # a server-side cursor: a million-row batch streams in pages, never all in memory
        with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(name=f"finished_{new_id('')}") as cur,
        ):
            cur.itersize = 5000
            cur.execute(
                'SELECT id, custom_id, "offset", length, state, request_id, status_code, result, error_code, '
                "error_message, cost FROM requests WHERE id BETWEEN %s AND %s ORDER BY id",
                (low, high),
            )
            for r in cur:
                body = bytes(r[7]) if r[7] is not None else None
                yield FinishedRow(
                    r[0] & LINE_MASK, r[1], r[2], r[3], RequestState(r[4]), r[5], r[6], body, r[8], r[9], r[10]
                )

    # ---- prompt templates ---------------------------------------------------------

    def add_prompt(self, prompt: PromptRecord) -> bool:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO prompts (project_id, slug, name, description, created_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (prompt.project_id, prompt.slug, prompt.name, prompt.description, prompt.created_at),
            )
            return cur.rowcount > 0

    def get_prompt(self, project_id: str, slug: str) -> PromptRecord | None:
        row = self._one(f"SELECT {PROMPT_COLUMNS} FROM prompts WHERE project_id = %s AND slug = %s", (project_id, slug))
        return PromptRecord(*row) if row else None

    def list_prompts(self, project_id: str) -> list[PromptRecord]:
        rows = self._all(f"SELECT {PROMPT_COLUMNS} FROM prompts WHERE project_id = %s ORDER BY slug", (project_id,))
        return [PromptRecord(*row) for row in rows]

    def add_prompt_version(
        self, project_id: str, slug: str, messages: list[dict[str, Any]], model_config: dict[str, Any], now: int
    ) -> PromptVersion:
        with self._tx() as cur:
            # the prompt's row serialises concurrent new versions of it (max + 1 would race)
            cur.execute("SELECT 1 FROM prompts WHERE project_id = %s AND slug = %s FOR UPDATE", (project_id, slug))
            row = cur.execute(
                "SELECT coalesce(max(version), 0) FROM prompt_versions WHERE project_id = %s AND slug = %s",
                (project_id, slug),
            ).fetchone()
            assert row is not None
            version = row[0] + 1
            cur.execute(
                "INSERT INTO prompt_versions (project_id, slug, version, messages, model_config, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (project_id, slug, version, _json(messages), _json(model_config), now),
            )
        return PromptVersion(slug, version, messages, model_config, now)

    def list_prompt_versions(self, project_id: str, slug: str) -> list[PromptVersion]:
        rows = self._all(
            "SELECT slug, version, messages, model_config, created_at FROM prompt_versions "
            "WHERE project_id = %s AND slug = %s ORDER BY version",
            (project_id, slug),
        )
        return [_prompt_version(row) for row in rows]

    def get_prompt_version(self, project_id: str, slug: str, version: int | None) -> PromptVersion | None:
        row = self._one(
            "SELECT v.slug, v.version, v.messages, v.model_config, v.created_at FROM prompt_versions v "
            "JOIN prompts p ON p.project_id = v.project_id AND p.slug = v.slug "
            "WHERE v.project_id = %s AND v.slug = %s AND v.version = coalesce(%s::bigint, p.published_version)",
            (project_id, slug, version),
        )
        return _prompt_version(row) if row else None

    def publish_prompt_version(self, project_id: str, slug: str, version: int) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE prompts SET published_version = %s WHERE project_id = %s AND slug = %s AND EXISTS ("
                "SELECT 1 FROM prompt_versions WHERE project_id = %s AND slug = %s AND version = %s)",
                (version, project_id, slug, project_id, slug, version),
            )
            return cur.rowcount > 0

    # ---- stored responses ---------------------------------------------------------

    def add_response(self, response: StoredResponse) -> None:
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO responses ({responses_sql.INSERT_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                responses_sql.insert_params(response),
            )

    def get_response(self, response_id: str, project_id: str) -> StoredResponse | None:
        row = self._one(responses_sql.SELECT + " WHERE id = %s AND project_id = %s", (response_id, project_id))
        return responses_sql.stored_response(row) if row else None

    def delete_expired_responses(self, created_before: int, limit: int) -> int:
        with self._tx() as cur:
            cur.execute(responses_sql.delete_expired_sql("%s"), (created_before, limit))
            return cur.rowcount

    def delete_response(self, response_id: str, project_id: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM responses WHERE id = %s AND project_id = %s", (response_id, project_id))
            return cur.rowcount > 0

    # ---- workers ------------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO workers (id, host, pid, heartbeat_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
                "heartbeat_at = EXCLUDED.heartbeat_at",
                (info.id, info.host, info.pid, info.heartbeat_at),
            )

    def heartbeat(self, worker_id: str, now: float) -> bool:
        with self._tx() as cur:
            cur.execute("UPDATE workers SET heartbeat_at = %s WHERE id = %s", (now, worker_id))
            return cur.rowcount > 0

    def list_workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(*r) for r in self._all("SELECT id, host, pid, heartbeat_at FROM workers ORDER BY id")]

    def reap_worker(self, worker_id: str) -> int:
        with self._tx() as cur:
            requeued = self._requeue(cur, "worker_id = %s", (worker_id,))
            cur.execute("UPDATE batches SET owner = NULL WHERE owner = %s", (worker_id,))
            released = cur.rowcount
            cur.execute("DELETE FROM workers WHERE id = %s", (worker_id,))
            if requeued or released:
                cur.execute(_NOTIFY)
            return requeued

    def requeue_orphans(self) -> int:
        with self._tx() as cur:
            unregistered = "NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = {})"
            requeued = self._requeue(cur, unregistered.format("requests.worker_id"), ())
            cur.execute(f"UPDATE batches SET owner = NULL WHERE owner IS NOT NULL AND {unregistered.format('owner')}")
            if requeued or cur.rowcount:
                cur.execute(_NOTIFY)
            return requeued

    @staticmethod
    def _requeue(cur: psycopg.Cursor[Any], which: str, params: Sequence[Any]) -> int:
        """Give running rows back to the queue and flag their batches for the claimers."""
        requeueable = _is("state", request_sources(RequestState.QUEUED))
        cur.execute(
            f"UPDATE requests SET state = '{_QUEUED}', worker_id = NULL WHERE {requeueable} AND {which} RETURNING id",
            params,
        )
        ids = [r[0] for r in cur.fetchall()]
        pks = sorted({rid >> LINE_BITS for rid in ids})
        if pks:
            cur.execute("UPDATE batches SET requeued = 1 WHERE pk = ANY(%s)", (pks,))
        return len(ids)

    def claim_batch_job(self, worker_id: str, now: int) -> BatchJob | None:
        with self._tx() as cur:
            row = cur.execute(
                # what `job_kind` asks for, as SQL; SKIP LOCKED: two workers never wait on one batch
                f"UPDATE batches SET owner = %s WHERE pk = (SELECT pk FROM batches "
                f"WHERE ({_is('status', JOB_OF_STATUS)} OR (status = %s AND (expires_at <= %s OR upstream IS NOT NULL))) "
                "AND owner IS NULL AND wake_at <= %s ORDER BY pk LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {BATCH_COLUMNS}",
                (worker_id, RUNNABLE_STATUS.value, now, now),
            ).fetchone()
        if row is None:
            return None
        batch = _batch(row)
        kind = job_kind(batch, now)
        assert kind is not None, "the query selects only batches that need a job"
        return BatchJob(kind, batch, worker_id)

    def release_batch_job(self, batch_id: str, worker_id: str, wake_at: int) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE batches SET owner = NULL, wake_at = %s WHERE id = %s AND owner = %s",
                (wake_at, batch_id, worker_id),
            )

    def claim_requests(self, worker_id: str, limit: int, now: int) -> list[ClaimedRequest]:
        claims: list[ClaimedRequest] = []
        where = (
            "status = %s AND expires_at > %s AND (claim_cursor < total OR requeued <> 0) "
            f"AND upstream IS NULL AND {lifecycle_sql.NOT_PAUSED} AND budget_paused_at IS NULL"
        )
        params = (RUNNABLE_STATUS.value, now)
        with self._tx() as cur:
            runnable = cur.execute(scheduling_sql.candidates_sql(where), params).fetchall()
            plan = plan_claims([scheduling_sql.candidate(r) for r in runnable], limit, now)
            # each batch's claim cursor is taken by one worker at a time; the others skip
            # that batch rather than queue behind it. Only when every planned batch is
            # locked (other claims, result counts) does a claim wait, for the first one:
            # it is a moment, and an empty claim would idle the worker until the next poll
            lock = f"SELECT {scheduling_sql.BATCH_COLUMNS} FROM batches WHERE pk = %s AND {where} FOR UPDATE"
            locked_any = False
            for candidate, want in plan:
                row = cur.execute(lock + " SKIP LOCKED", (candidate.ref[0], *params)).fetchone()
                if row is not None:
                    locked_any = True
                    claims += self._claim_lines(cur, worker_id, row, candidate.project_id, want)
            if plan and not locked_any:
                candidate, want = plan[0]
                row = cur.execute(lock, (candidate.ref[0], *params)).fetchone()
                if row is not None:
                    claims += self._claim_lines(cur, worker_id, row, candidate.project_id, want)
        return claims

    def _claim_lines(
        self, cur: psycopg.Cursor[Any], worker_id: str, batch: tuple[Any, ...], project_id: str, want: int
    ) -> list[ClaimedRequest]:
        """Claim up to `want` lines of one batch (its row locked): requeued rows first, then fresh lines."""
        pk, batch_id, file_id, endpoint, cursor, total, requeued = batch
        claimable = _is("state", request_sources(RequestState.RUNNING))
        base = pk << LINE_BITS
        taken: list[tuple[int, int, int, int]] = []  # (line, offset, length, attempts)
        if requeued:
            rows = cur.execute(
                f"UPDATE requests SET state = '{_RUNNING}', worker_id = %s, attempts = attempts + 1 "
                f"WHERE id IN (SELECT id FROM requests WHERE {claimable} AND id BETWEEN %s AND %s "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
                'RETURNING id, "offset", length, attempts',
                (worker_id, base, base | LINE_MASK, want),
            ).fetchall()
            taken += sorted((r[0] & LINE_MASK, r[1], r[2], r[3]) for r in rows)
            requeued = int(len(rows) == want)
        fresh = list(self._lines(cur, pk, cursor, min(cursor + want - len(taken), total)))
        if fresh:
            cur.execute(
                'INSERT INTO requests (id, "offset", length, state, worker_id, attempts) '
                f"SELECT i, o, l, '{_RUNNING}', %s, 1 FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) "
                "AS t(i, o, l)",
                (
                    worker_id,
                    [base | line for line, _, _ in fresh],
                    [offset for _, offset, _ in fresh],
                    [length for _, _, length in fresh],
                ),
            )
        taken += [(line, offset, length, 1) for line, offset, length in fresh]
        cur.execute(
            "UPDATE batches SET claim_cursor = %s, requeued = %s WHERE pk = %s",
            (cursor + len(fresh), requeued, pk),
        )
        return [ClaimedRequest(batch_id, file_id, endpoint, *t, project_id) for t in taken]

    def record_results(self, worker_id: str, results: list[RequestResult], now: int) -> None:
        if bad := {r.state for r in results} - RESULT_STATES:
            raise ValueError(f"a run cannot end {', '.join(sorted(bad))}")
        if not results:
            return
        keyed = {(self._pk(r.batch_id) << LINE_BITS) | r.line: r for r in results}
        ordered = [keyed[rid] for rid in sorted(keyed)]
        totals: dict[int, list[float]] = {}
        with self._tx() as cur:
            # one statement for the whole flush. Only rows this worker still holds are
            # written: one that was reaped and requeued while it ran belongs to someone else
            held = cur.execute(
                "UPDATE requests r SET state = v.state, attempts = v.attempts, worker_id = NULL, "
                "request_id = v.request_id, custom_id = coalesce(v.custom_id, r.custom_id), "
                "status_code = v.status_code, result = v.result, error_code = v.error_code, "
                "error_message = v.error_message, input_tokens = v.input_tokens, output_tokens = v.output_tokens, "
                "cost = v.cost, latency_ms = v.latency_ms, backend = v.backend, model = v.model "
                "FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::bigint[], "
                "%s::bytea[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::float8[], %s::bigint[], "
                "%s::text[], %s::text[]) AS v(id, state, attempts, request_id, custom_id, status_code, result, "
                "error_code, error_message, input_tokens, output_tokens, cost, latency_ms, backend, model) "
                f"WHERE r.id = v.id AND r.state = '{_RUNNING}' AND r.worker_id = %s RETURNING r.id",
                (
                    sorted(keyed), [r.state.value for r in ordered], [r.attempts for r in ordered],
                    [r.request_id for r in ordered], [r.custom_id for r in ordered],
                    [r.status_code for r in ordered], [r.body for r in ordered], [r.error_code for r in ordered],
                    [r.error_message for r in ordered], [r.input_tokens for r in ordered],
                    [r.output_tokens for r in ordered], [r.cost for r in ordered], [r.latency_ms for r in ordered],
                    [r.backend for r in ordered], [r.model for r in ordered], worker_id,
                ),
                prepare=False,  # the generic plan of a prepared statement scans requests: 10x slower
            ).fetchall()  # fmt: skip
            self._meter_lines(cur, [(rid, keyed[rid]) for (rid,) in held], now)
            for (rid,) in held:
                r = keyed[rid]
                t = totals.setdefault(rid >> LINE_BITS, [0, 0, 0, 0, 0.0])
                t[0] += r.state == RequestState.SUCCEEDED
                t[1] += r.state == RequestState.FAILED
                t[2] += r.input_tokens
                t[3] += r.output_tokens
                t[4] += r.cost
            finalizing = 0
            for pk in sorted(totals):  # batch rows in pk order too
                done, failed, tokens_in, tokens_out, cost = totals[pk]
                cur.execute(
                    "UPDATE batches SET completed = completed + %s, failed = failed + %s, "
                    "input_tokens = input_tokens + %s, output_tokens = output_tokens + %s, cost = cost + %s "
                    "WHERE pk = %s",
                    (int(done), int(failed), int(tokens_in), int(tokens_out), cost, pk),
                )
                finalizing += self._to_finalizing(cur, pk, now, "completed + failed >= total")
            if finalizing:
                cur.execute(_NOTIFY)  # a finalize job

    @staticmethod
    def _meter_lines(cur: psycopg.Cursor[Any], held: list[tuple[int, RequestResult]], now: int) -> None:
        """The ledger rows of lines that ran, in one statement (their batches' project,
        key and endpoint joined in)."""
        rows = [ledger_sql.batch_params(r, rid >> LINE_BITS, now) for rid, r in held if r.state in METERED_STATES]
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        cur.execute(
            ledger_sql.lines_insert_sql(
                "unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], "
                "%s::float8[], %s::bigint[], %s::bigint[], %s::text[], %s::float8[], %s::float8[], %s::bigint[]) "
                f"AS v({ledger_sql.LINE_COLUMNS})"
            ),
            [list(c) for c in columns],
            prepare=False,
        )
        rollup_sql.add_batch_lines(cur, "%s", rows)

    # ---- rate limits (core/ratelimit.py) ----------------------------------------------

    def rate_limit_step(
        self, key_id: str, now: float, count_running: bool, step: ratelimit_sql.Step, wait: bool = True
    ) -> bool:
        if not wait:
            return False  # every step is a round trip to the server
        with self._tx() as cur:
            cur.execute(ratelimit_sql.LOCK_KEY_SQL, (key_id,))  # the key's steps, one at a time
            ratelimit_sql.run_step(cur, "%s", key_id, now, count_running, step)
        return True

    def set_batch_pacing(self, batch_id: str, until: float | None, note: str | None) -> None:
        with self._tx() as cur:
            cur.execute(ratelimit_sql.set_pacing_sql("%s"), (batch_id, until, note))

    def batch_pacing(self, batch_ids: list[str]) -> dict[str, tuple[float, str]]:
        if not batch_ids:
            return {}
        rows = self._all(ratelimit_sql.pacing_sql("%s", len(batch_ids)), batch_ids)
        return {batch_id: (until, note) for batch_id, until, note in rows}

    # ---- the ledger -----------------------------------------------------------------

    def add_ledger_entry(self, entry: LedgerEntry) -> None:
        with self._tx() as cur:
            row = cur.execute(ledger_sql.insert_sql("%s") + " RETURNING pk", ledger_sql.entry_params(entry)).fetchone()
            entry.id = row[0] if row else 0
            rollup_sql.add_entries(cur, "%s", [entry])

    def list_ledger(self, query: LedgerQuery) -> Page[LedgerEntry]:
        sql, params = ledger_sql.select_sql(query, "%s")
        rows = self._all(sql, params)
        return Page([ledger_sql.entry(r) for r in rows[: query.limit]], len(rows) > query.limit)

    def ledger_usage(self, query: LedgerQuery, group_by: tuple[str, ...], bucket_seconds: int) -> list[UsageRow]:
        seconds = "CAST(floor(started_at) AS BIGINT)"  # a cast alone would round
        return rollup_sql.usage(self._all, query, group_by, bucket_seconds, "%s", seconds)

    # ---- budgets and /metrics -------------------------------------------------------

    def key_spend(self, key_id: str, since: float | None, after: int = 0, upto: int | None = None) -> float:
        sql, params = budgets_sql.spend_sql(key_id, since, after, upto, "%s")
        row = self._one(sql, params)
        assert row is not None
        return float(row[0])

    def set_budget_pauses(self, key_ids: list[str], now: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        sql, params = budgets_sql.mismatched_sql(key_ids, "%s")
        with self._tx() as cur:
            pause, resume = budgets_sql.split(cur.execute(sql, params).fetchall())
            if pause:
                cur.executemany(budgets_sql.pause_sql("%s"), [(now, batch_id) for batch_id, _ in pause])
            if resume:
                cur.executemany(budgets_sql.resume_sql("%s"), [(batch_id,) for batch_id, _ in resume])
        return pause, resume

    def ledger_max_id(self) -> int:
        row = self._one(metrics_sql.MAX_ID_SQL)
        assert row is not None
        return int(row[0])

    def ledger_totals(self, after: int, upto: int | None) -> list[LedgerTotals]:
        sql, params = metrics_sql.totals_sql(after, upto, "%s")
        return [metrics_sql.totals_row(r) for r in self._all(sql, params)]

    def batch_gauges(self) -> BatchGauges:
        with self._tx() as cur:
            running_row = cur.execute(metrics_sql.RUNNING_SQL).fetchone()
            rows = cur.execute(metrics_sql.GAUGES_SQL).fetchall()
        return metrics_sql.gauges(rows, int(running_row[0]) if running_row else 0)

    # ---- the billing outbox (core/billing.py) ---------------------------------------

    def add_billing_events(self, events: list[BillingEvent]) -> int:
        with self._tx() as cur:
            added = 0
            for e in events:
                added += cur.execute(billing_sql.insert_sql("%s"), billing_sql.event_params(e)).rowcount
            return added

    def billing_totals(self, since: int) -> list[BillingTotal]:
        return [billing_sql.total(r) for r in self._all(billing_sql.totals_sql("%s"), (since,))]

    def claim_billing_event(self, now: float, lease: float) -> BillingEvent | None:
        with self._tx() as cur:
            row = cur.execute(billing_sql.due_sql("%s", " FOR UPDATE SKIP LOCKED"), (now,)).fetchone()
            if row is None:
                return None
            cur.execute(billing_sql.lease_sql("%s"), (now + lease, row[0]))
        return billing_sql.event(row[1:])

    def record_billing_attempt(self, attempt: BillingAttempt, status: str, next_attempt_at: float) -> None:
        with self._tx() as cur:
            cur.execute(billing_sql.attempt_insert_sql("%s"), billing_sql.attempt_params(attempt))
            cur.execute(billing_sql.outcome_sql("%s"), billing_sql.outcome_params(attempt, status, next_attempt_at))

    def list_billing_events(self, status: str | None, limit: int) -> list[BillingEvent]:
        sql, params = billing_sql.list_sql("%s", status)
        return [billing_sql.event(r) for r in self._all(sql, [*params, limit])]

    def list_billing_attempts(self, identifier: str) -> list[BillingAttempt]:
        return [BillingAttempt(*r) for r in self._all(billing_sql.attempts_sql("%s"), (identifier,))]

    def retry_failed_billing_events(self, now: float) -> int:
        with self._tx() as cur:
            return cur.execute(billing_sql.retry_failed_sql("%s"), (now,)).rowcount

    def billing_summary(self) -> BillingSummary:
        return billing_sql.summary(self._all(billing_sql.SUMMARY_SQL))

    def search_batches(self, query: BatchSearch) -> Page[BatchRecord]:
        sql, params = browse_sql.search_batches_sql(query, "%s", BATCH_COLUMNS)
        rows = self._all(sql, params)
        return Page([_batch(r) for r in rows[: query.limit]], len(rows) > query.limit)

    def list_request_rows(
        self, batch_id: str, state: RequestState | None, after_line: int | None, limit: int
    ) -> Page[RequestRow]:
        sql, params = browse_sql.request_rows_sql(*self._range(batch_id), state, after_line, limit, "%s")
        rows = self._all(sql, params)
        return Page([browse_sql.request_row(r) for r in rows[:limit]], len(rows) > limit)

    @staticmethod
    def _to_finalizing(cur: psycopg.Cursor[Any], pk: int, now: int, condition: str = "true") -> int:
        """Move a batch whose every line is done on to writing its result files."""
        cur.execute(
            "UPDATE batches SET status = %s, finalizing_at = %s "
            f"WHERE pk = %s AND {_is('status', batch_sources(BatchStatus.FINALIZING))} AND {condition}",
            (BatchStatus.FINALIZING.value, now, pk),
        )
        return cur.rowcount

    # ---- pause, resume, retry links -----------------------------------------------

    def pause_batch(self, batch_id: str, now: int) -> bool:
        with self._tx() as cur:
            return cur.execute(lifecycle_sql.pause_sql("%s"), (now, batch_id)).rowcount > 0

    def resume_batch(self, batch_id: str) -> bool:
        with self._tx() as cur:
            resumed = cur.execute(lifecycle_sql.resume_sql("%s"), (batch_id,)).rowcount > 0
            if resumed:
                cur.execute(_NOTIFY)  # lines to claim again
            return resumed

    def link_retry(self, batch_id: str, retry_id: str) -> bool:
        with self._tx() as cur:
            return lifecycle_sql.link_retry(cur, "%s", "FOR UPDATE", batch_id, retry_id)

    # ---- webhooks -----------------------------------------------------------------

    def add_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        with self._tx() as cur:
            cur.execute(webhooks_sql.insert_endpoint_sql("%s"), webhooks_sql.endpoint_params(endpoint))

    def list_webhook_endpoints(self, project_id: str) -> list[WebhookEndpoint]:
        rows = self._all(webhooks_sql.select_endpoints_sql("%s") + " ORDER BY created_at, id", (project_id,))
        return [webhooks_sql.endpoint(r) for r in rows]

    def get_webhook_endpoint(self, endpoint_id: str, project_id: str) -> WebhookEndpoint | None:
        row = self._one(webhooks_sql.select_endpoints_sql("%s") + " AND id = %s", (project_id, endpoint_id))
        return webhooks_sql.endpoint(row) if row else None

    def delete_webhook_endpoint(self, endpoint_id: str, project_id: str) -> bool:
        with self._tx() as cur:
            return webhooks_sql.delete_endpoint(cur, "%s", endpoint_id, project_id)

    def batch_event(self, batch_id: str) -> WebhookEvent | None:
        row = self._one(webhooks_sql.select_event_sql("%s"), (batch_id,))
        return webhooks_sql.event(row) if row else None

    def claim_webhook_deliveries(self, now: int, limit: int, lease_until: int) -> list[DueDelivery]:
        with self._tx() as cur:  # SKIP LOCKED: workers claiming together take different rows
            return webhooks_sql.claim(cur, "%s", "FOR UPDATE OF d SKIP LOCKED", now, limit, lease_until)

    def record_webhook_attempt(
        self, delivery_id: int, attempt: WebhookAttempt, next_attempt_at: int | None, delivered: bool
    ) -> None:
        with self._tx() as cur:
            webhooks_sql.record_attempt(cur, "%s", delivery_id, attempt, next_attempt_at, delivered)

    def list_webhook_deliveries(self, endpoint_id: str, project_id: str, limit: int) -> list[WebhookDelivery]:
        with self._tx() as cur:
            return webhooks_sql.list_deliveries(cur, "%s", endpoint_id, project_id, limit)


class PostgresWakeups:
    """Calls `wake` whenever a store anywhere announces work on `WAKE_CHANNEL`.

    A thread holding one connection that LISTENs; notifications sent while it is
    disconnected are lost, which is why workers still poll, on a long interval."""

    def __init__(self, url: str, wake: Callable[[], object]):
        self.url = url
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="batchgate-pg-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    self.wake()  # work may have appeared while we were not listening
                    while not self._stop.is_set():
                        # a short timeout: stop() is noticed within a second
                        if any(True for _ in conn.notifies(timeout=1.0)):
                            self.wake()
            except psycopg.Error:
                log.warning("lost the PostgreSQL LISTEN connection; reconnecting", exc_info=True)
                self._stop.wait(1.0)
