"""The SQLite (WAL) store: the zero-setup, one-machine implementation of `Store`.

Several processes (`serve` and `batchgate worker`) may share one database: every
read-modify-write runs in a `BEGIN IMMEDIATE` transaction, which SQLite serialises.
`synchronous=NORMAL` in WAL mode survives a crash of the process (kill -9) without
losing a committed transaction; only an OS crash or power loss may drop the last ones.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

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
from batchgate.store.migrate import upgrade_sqlite
from batchgate.store.private import private_database
from batchgate.store.sqlite_rows import execute_values, id_set

LINE_BITS = 32
LINE_MASK = (1 << LINE_BITS) - 1

BATCH_COLUMNS = (
    "id, project_id, endpoint, input_file_id, completion_window, status, created_at, expires_at, "
    "metadata, errors, output_file_id, error_file_id, in_progress_at, finalizing_at, completed_at, "
    "failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, input_tokens, "
    "output_tokens, priority, source, cost, upstream, upstream_batch_id, operation, output_expires_after, key_id, "
    "paused_at, budget_paused_at"
)
FILE_COLUMNS = "id, project_id, purpose, filename, bytes, created_at, expires_at, key_id"
PROMPT_COLUMNS = "project_id, slug, name, description, created_at, published_version"


def _needed(file_id: str) -> str:
    """SQL true while a batch needs the file `file_id` (an SQL expression) names: what
    `BatchRecord.needs_file` says, for every batch at once."""
    return (
        f"(EXISTS (SELECT 1 FROM batches WHERE input_file_id = {file_id} AND {_is('status', ACTIVE_STATUSES)}) "
        f"OR EXISTS (SELECT 1 FROM batches WHERE source = 'operation' AND {file_id} IN "
        "(input_file_id, output_file_id, error_file_id, json_extract(operation, '$.items_file_id'))))"
    )


def _is(column: str, states: Iterable[enum.StrEnum]) -> str:
    """`column = 'a'` or `column IN ('a', 'b')`: a set of states from core/states.py as SQL.

    Inlined rather than bound: the values are enum constants, and SQLite uses a partial
    index (`requests_running`, `requests_queued`) only when the query names its literal."""
    values = sorted(f"'{state.value}'" for state in states)
    if not values:
        return "0"  # nothing leads there
    return f"{column} = {values[0]}" if len(values) == 1 else f"{column} IN ({', '.join(values)})"


_RUNNING = RequestState.RUNNING.value
_QUEUED = RequestState.QUEUED.value


def _prompt_version(row: tuple) -> PromptVersion:
    return PromptVersion(row[0], row[1], orjson.loads(row[2]), orjson.loads(row[3]), row[4])


def _batch(row: tuple) -> BatchRecord:
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


def _file(row: tuple) -> FileRecord:
    return FileRecord(*row)


class SQLiteStore:
    concurrent_writes = False  # one writer at a time: the database lock

    def __init__(self, path: Path):
        self.path = path
        private_database(path)
        upgrade_sqlite(path)
        self._local = threading.local()
        self._pks: dict[str, int] = {}
        self._chunk_cache: dict[tuple[int, int], array[int]] = {}
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer = threading.Lock()  # one write transaction of this process at a time

    # ---- connections --------------------------------------------------------------

    def _conn(self, waits: bool = True) -> sqlite3.Connection:
        """This thread's connection. With `waits` False, a second one that never waits for
        the write lock and never checkpoints the WAL (the store's other connections do):
        for a step on an event loop (`_try_rate_limit_step`)."""
        name = "conn" if waits else "try_conn"
        conn = getattr(self._local, name, None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60 if waits else 0)
            if waits:
                conn.execute("PRAGMA journal_mode=WAL")
            else:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={60000 if waits else 0}")
            conn.execute("PRAGMA cache_size=-8192")  # per connection, and there is one per thread
            conn.execute("PRAGMA temp_store=MEMORY")
            setattr(self._local, name, conn)
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # this process's writers queue here, not on SQLite's lock: a busy SQLite writer
        # polls with sleeps of 1 ms and more, which made a sync request that wrote right
        # after another (its ledger row, a rate-limit settlement) wait ~20 ms at p50
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:  # never leave a connection holding the write lock
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    raise InsufficientStorageError(
                        "The data dir's disk is full: nothing was written. Free space (deleting files works) and retry."
                    ) from exc
                raise

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def ping(self) -> None:
        self._conn().execute("SELECT 1").fetchone()

    def _pk(self, batch_id: str) -> int:
        pk = self._pks.get(batch_id)
        if pk is None:
            row = self._conn().execute("SELECT pk FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise KeyError(batch_id)
            pk = self._pks[batch_id] = row[0]
        return pk

    def _range(self, batch_id: str) -> tuple[int, int]:
        base = self._pk(batch_id) << LINE_BITS
        return base, base | LINE_MASK

    # ---- projects and keys --------------------------------------------------------

    def ensure_project(self, name: str, now: int) -> Project:
        with self._write() as conn:
            row = conn.execute("SELECT id, name, created_at FROM projects WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = (new_id("proj_"), name, now)
                conn.execute("INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?)", row)
        return Project(*row)

    def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        with self._write() as conn:
            conn.execute(
                keys_sql.insert_sql("?"),
                keys_sql.insert_params(key, key_hash),
            )

    _KEY_SELECT = keys_sql.KEY_SELECT

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        row = (
            self._conn()
            .execute(self._KEY_SELECT + " WHERE k.key_hash = ? AND k.revoked_at IS NULL", (key_hash,))
            .fetchone()
        )
        return keys_sql.api_key(row) if row else None

    def list_api_keys(self) -> list[ApiKey]:
        return [keys_sql.api_key(row) for row in self._conn().execute(self._KEY_SELECT + " ORDER BY k.created_at")]

    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self._conn().execute(self._KEY_SELECT + " WHERE k.id = ?", (key_id,)).fetchone()
        return keys_sql.api_key(row) if row else None

    def update_api_key(self, key: ApiKey) -> bool:
        with self._write() as conn:
            cur = conn.execute(keys_sql.update_sql("?"), keys_sql.update_params(key))
            return cur.rowcount > 0

    def list_projects(self) -> list[Project]:
        return [Project(*r) for r in self._conn().execute("SELECT id, name, created_at FROM projects ORDER BY name")]

    def set_project_weight(self, project_id: str, weight: float) -> bool:
        with self._write() as conn:
            return conn.execute(scheduling_sql.set_weight_sql("?"), (weight, project_id)).rowcount > 0

    def project_weights(self) -> dict[str, float]:
        return {pid: float(w) for pid, w in self._conn().execute(scheduling_sql.WEIGHTS_SQL)}

    def set_project_bodies(self, project_id: str, settings: BodySettings) -> bool:
        with self._write() as conn:
            params = bodies_sql.set_settings_params(project_id, settings)
            return conn.execute(bodies_sql.set_settings_sql("?"), params).rowcount > 0

    def project_bodies(self, project_id: str) -> BodySettings:
        return bodies_sql.settings(self._conn().execute(bodies_sql.settings_sql("?"), (project_id,)).fetchone())

    def add_request_bodies(self, ledger_id: int, bodies: RequestBodies) -> None:
        with self._write() as conn:
            conn.execute(bodies_sql.insert_sql("?"), bodies_sql.insert_params(ledger_id, bodies))

    def get_request_bodies(self, ledger_id: int) -> RequestBodies | None:
        return bodies_sql.bodies(self._conn().execute(bodies_sql.select_sql("?"), (ledger_id,)).fetchone())

    def revoke_api_key(self, key_id: str, now: int) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            return cur.rowcount > 0

    # ---- files --------------------------------------------------------------------

    def add_file(self, file: FileRecord) -> None:
        with self._write() as conn:
            self._insert_file(conn, file)

    @staticmethod
    def _insert_file(conn: sqlite3.Connection, f: FileRecord) -> None:
        conn.execute(
            f"INSERT OR REPLACE INTO files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (f.id, f.project_id, f.purpose, f.filename, f.bytes, f.created_at, f.expires_at, f.key_id),
        )

    def get_file(self, file_id: str, project_id: str | None) -> FileRecord | None:
        row = self._conn().execute(f"SELECT {FILE_COLUMNS}, project_id FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None or (project_id is not None and row[-1] != project_id):
            return None
        return _file(row[:-1])

    def list_files(
        self, project_id: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page[FileRecord]:
        sql = f"SELECT {FILE_COLUMNS} FROM files WHERE project_id = ?"
        params: list[object] = [project_id]
        if purpose:
            sql += " AND purpose = ?"
            params.append(purpose)
        if after is not None:
            # another project's id finds no pk, exactly like an unknown id (an empty page)
            sql += f" AND pk {'<' if order == 'desc' else '>'} (SELECT pk FROM files WHERE id = ? AND project_id = ?)"
            params += [after, project_id]
        sql += f" ORDER BY pk {'DESC' if order == 'desc' else 'ASC'} LIMIT ?"
        params.append(limit + 1)
        rows = self._conn().execute(sql, params).fetchall()
        return Page([_file(r) for r in rows[:limit]], len(rows) > limit)

    def delete_file(self, file_id: str, project_id: str) -> bool:
        # one write transaction (BEGIN IMMEDIATE) checks and deletes: add_batch's check of
        # the same file comes wholly before or after it
        with self._write() as conn:
            cur = conn.execute(
                f"DELETE FROM files WHERE id = :id AND project_id = :project AND NOT {_needed(':id')}",
                {"id": file_id, "project": project_id},
            )
            return cur.rowcount > 0

    def delete_expired_files(self, now: int, limit: int) -> list[FileRecord]:
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {FILE_COLUMNS} FROM files f WHERE expires_at <= ? AND NOT {_needed('f.id')} "
                "ORDER BY expires_at LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany("DELETE FROM files WHERE id = ?", [(r[0],) for r in rows])
        return [_file(r) for r in rows]

    def file_in_use(self, file_id: str) -> bool:
        return bool(self._conn().execute(f"SELECT {_needed(':id')}", {"id": file_id}).fetchone()[0])

    # ---- batches ------------------------------------------------------------------

    def add_batch(self, b: BatchRecord) -> bool:
        items = b.operation.get("items_file_id") if b.operation else None
        with self._write() as conn:  # as in delete_file: the check and the insert in one transaction
            present = "SELECT 1 FROM files WHERE id = ? AND project_id = ?"
            for file_id in (f for f in (b.input_file_id, items) if f):
                if conn.execute(present, (file_id, b.project_id)).fetchone() is None:
                    return False
            conn.execute(
                "INSERT INTO batches (id, project_id, endpoint, input_file_id, completion_window, status, "
                "created_at, expires_at, metadata, priority, source, operation, output_expires_after, key_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    b.id, b.project_id, b.endpoint, b.input_file_id, b.completion_window, b.status.value,
                    b.created_at, b.expires_at, orjson.dumps(b.metadata).decode() if b.metadata else None,
                    b.priority, b.source, orjson.dumps(b.operation).decode() if b.operation else None,
                    b.output_expires_after, b.key_id,
                ),
            )  # fmt: skip
        return True

    def get_batch(self, batch_id: str, project_id: str | None) -> BatchRecord | None:
        row = self._conn().execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None or (project_id is not None and row[1] != project_id):
            return None
        return _batch(row)

    def list_batches(
        self, project_id: str, after: str | None, limit: int, source: str | None = None
    ) -> Page[BatchRecord]:
        sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE project_id = ?"
        params: list[object] = [project_id]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        if after is not None:
            # another project's id finds no pk, exactly like an unknown id (an empty page)
            sql += " AND pk < (SELECT pk FROM batches WHERE id = ? AND project_id = ?)"
            params += [after, project_id]
        rows = self._conn().execute(sql + " ORDER BY pk DESC LIMIT ?", (*params, limit + 1)).fetchall()
        return Page([_batch(r) for r in rows[:limit]], len(rows) > limit)

    def start_batch(self, batch_id: str, total: int, now: int, owner: str, upstream: str | None = None) -> bool:
        with self._write() as conn:
            # a batch cancelled while it validated still gets its lines, to settle as cancelled
            starts = _is("status", batch_sources(BatchStatus.IN_PROGRESS))
            cur = conn.execute(
                "UPDATE batches SET total = ?, claim_cursor = 0, upstream = ?, "
                f"status = CASE WHEN {starts} THEN ? ELSE status END, "
                f"in_progress_at = CASE WHEN {starts} THEN ? ELSE in_progress_at END "
                f"WHERE id = ? AND owner = ? AND {_is('status', ACCEPTS_LINES)}",
                (total, upstream, BatchStatus.IN_PROGRESS.value, now, batch_id, owner),
            )
            return cur.rowcount > 0

    def set_upstream_batch(self, batch_id: str, owner: str, upstream_batch_id: str) -> None:
        with self._write() as conn:
            self._check_owner(conn, self._pk(batch_id), owner)
            conn.execute("UPDATE batches SET upstream_batch_id = ? WHERE id = ?", (upstream_batch_id, batch_id))

    def mirror_counts(self, batch_id: str, owner: str, completed: int, failed: int) -> None:
        with self._write() as conn:
            self._check_owner(conn, self._pk(batch_id), owner)
            conn.execute("UPDATE batches SET completed = ?, failed = ? WHERE id = ?", (completed, failed, batch_id))

    def import_results(
        self, batch_id: str, owner: str, rows: list[tuple[int, int, RequestResult]], done: bool, now: int
    ) -> None:
        pk = self._pk(batch_id)
        low, high = self._range(batch_id)
        with self._write() as conn:
            self._check_owner(conn, pk, owner)
            conn.executemany(
                "INSERT OR REPLACE INTO requests (id, offset, length, state, attempts, request_id, custom_id, "
                "status_code, result, error_code, error_message, input_tokens, output_tokens, cost, latency_ms, "
                "backend, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            rollup_sql.add_batch_lines(conn, "?", rollup_sql.new_lines(conn, "?", batch_id, metered))
            conn.executemany(ledger_sql.imported_insert_sql("?"), metered)
            conn.execute(
                "UPDATE batches SET (completed, failed, input_tokens, output_tokens, cost) = ("
                "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed'), "
                "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost), 0) "
                "FROM requests WHERE id BETWEEN ? AND ?) WHERE pk = ?",
                (low, high, pk),
            )
            if done:
                conn.execute("UPDATE batches SET claim_cursor = total WHERE pk = ?", (pk,))
                self._to_finalizing(conn, pk, now)

    def fail_batch(self, batch_id: str, errors: list[BatchError], now: int, owner: str) -> bool:
        data = orjson.dumps([{"code": e.code, "message": e.message, "line": e.line, "param": e.param} for e in errors])
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE batches SET status = ?, failed_at = ?, errors = ?, owner = NULL "
                f"WHERE id = ? AND {_is('status', batch_sources(BatchStatus.FAILED))} AND owner = ?",
                (BatchStatus.FAILED.value, now, data.decode(), batch_id, owner),
            )
            if cur.rowcount:
                webhooks_sql.enqueue(conn, "?", batch_id, BatchStatus.FAILED, now)
            return cur.rowcount > 0

    def request_cancel(self, batch_id: str, now: int) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE batches SET status = ?, cancelling_at = ?, wake_at = 0 "
                f"WHERE id = ? AND {_is('status', batch_sources(BatchStatus.CANCELLING))}",
                (BatchStatus.CANCELLING.value, now, batch_id),
            )
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
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE batches SET status = ?, {status.value}_at = ?, output_file_id = ?, error_file_id = ?, "
                "completed = ?, failed = ?, total = ?, owner = NULL "
                f"WHERE id = ? AND owner = ? AND {_is('status', batch_sources(status))}",
                (
                    status.value, now, output_file_id, error_file_id, completed, failed, completed + failed,
                    batch_id, owner,
                ),
            )  # fmt: skip
            if not cur.rowcount:
                return False
            for f in files:
                self._insert_file(conn, f)
            webhooks_sql.enqueue(conn, "?", batch_id, status, now)
            return True

    # ---- request rows -------------------------------------------------------------

    def add_lines(self, batch_id: str, lines: LineIndex, owner: str) -> None:
        pk = self._pk(batch_id)
        with self._write() as conn:
            self._check_owner(conn, pk, owner)
            (first,) = conn.execute(
                "SELECT coalesce(sum(count), 0) FROM line_chunks WHERE batch_pk = ?", (pk,)
            ).fetchone()
            conn.execute(
                "INSERT INTO line_chunks (batch_pk, first, count, data) VALUES (?, ?, ?, ?)",
                (pk, first, len(lines) // 3, lines.tobytes()),
            )

    @staticmethod
    def _check_owner(conn: sqlite3.Connection, pk: int, owner: str) -> None:
        row = conn.execute("SELECT owner FROM batches WHERE pk = ?", (pk,)).fetchone()
        if row is None or row[0] != owner:
            raise JobLostError(f"batch job now belongs to {row[0] if row else None!r}, not {owner!r}")

    def _lines(self, conn: sqlite3.Connection, pk: int, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(line, offset, length) for positions [start, stop) of a batch's line index."""
        rows = conn.execute(
            "SELECT first, count, data FROM line_chunks WHERE batch_pk = ? AND first < ? AND first + count > ? "
            "ORDER BY first",
            (pk, stop, start),
        ).fetchall()
        for first, _count, data in rows:
            chunk = self._chunk_cache.get((pk, first))
            if chunk is None:
                chunk = array("q")
                chunk.frombytes(data)
                self._chunk_cache.clear()  # claims walk forward: the last chunk is all we reuse
                self._chunk_cache[(pk, first)] = chunk
            lo, hi = max(start - first, 0), min(stop - first, len(chunk) // 3)
            for i in range(3 * lo, 3 * hi, 3):
                yield chunk[i], chunk[i + 1], chunk[i + 2]

    def clear_requests(self, batch_id: str, owner: str) -> None:
        pk = self._pk(batch_id)
        with self._write() as conn:
            self._check_owner(conn, pk, owner)
            conn.execute("DELETE FROM requests WHERE id BETWEEN ? AND ?", self._range(batch_id))
            conn.execute("DELETE FROM line_chunks WHERE batch_pk = ?", (pk,))
        self._chunk_cache.clear()

    def settle_unfinished(
        self, batch_id: str, state: RequestState, code: str, message: str, include_running: bool
    ) -> int:
        sources = settle_sources(state, include_running)  # ValueError for a state lines cannot be settled as
        pk = self._pk(batch_id)
        base = pk << LINE_BITS
        with self._write() as conn:
            settled = conn.execute(
                "UPDATE requests SET state = ?, error_code = ?, error_message = ?, worker_id = NULL "
                f"WHERE id BETWEEN ? AND ? AND {_is('state', sources)}",
                (state.value, code, message, *self._range(batch_id)),
            ).rowcount
            cursor, total = conn.execute("SELECT claim_cursor, total FROM batches WHERE pk = ?", (pk,)).fetchone()
            if cursor is not None and cursor < total:
                settled += conn.executemany(
                    # OR IGNORE: a passed-through batch's lines may have rows its upstream answered
                    "INSERT OR IGNORE INTO requests (id, offset, length, state, error_code, error_message) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        (base | line, offset, length, state.value, code, message)
                        for line, offset, length in self._lines(conn, pk, cursor, total)
                    ),
                ).rowcount
            conn.execute("UPDATE batches SET claim_cursor = total, requeued = 0 WHERE pk = ?", (pk,))
            return settled

    def count_running(self, batch_id: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT count(*) FROM requests INDEXED BY requests_running "
                f"WHERE state = '{_RUNNING}' AND id BETWEEN ? AND ?",
                self._range(batch_id),
            )
            .fetchone()
        )
        return int(row[0])

    def iter_finished(self, batch_id: str) -> Iterator[FinishedRow]:
        # a connection of its own: the generator may be consumed from another thread
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        try:
            cur = conn.execute(
                "SELECT id, custom_id, offset, length, state, request_id, status_code, result, error_code, "
                "error_message, cost FROM requests WHERE id BETWEEN ? AND ? ORDER BY id",
                self._range(batch_id),
            )
            while rows := cur.fetchmany(5000):
                for r in rows:
                    yield FinishedRow(r[0] & LINE_MASK, r[1], r[2], r[3], RequestState(r[4]), *r[5:])
        finally:
            conn.close()

    # ---- prompt templates ---------------------------------------------------------

    def add_prompt(self, prompt: PromptRecord) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "INSERT OR IGNORE INTO prompts (project_id, slug, name, description, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (prompt.project_id, prompt.slug, prompt.name, prompt.description, prompt.created_at),
                ).rowcount
                > 0
            )

    def get_prompt(self, project_id: str, slug: str) -> PromptRecord | None:
        row = (
            self._conn()
            .execute(f"SELECT {PROMPT_COLUMNS} FROM prompts WHERE project_id = ? AND slug = ?", (project_id, slug))
            .fetchone()
        )
        return PromptRecord(*row) if row else None

    def list_prompts(self, project_id: str) -> list[PromptRecord]:
        rows = self._conn().execute(
            f"SELECT {PROMPT_COLUMNS} FROM prompts WHERE project_id = ? ORDER BY slug", (project_id,)
        )
        return [PromptRecord(*row) for row in rows]

    def add_prompt_version(
        self, project_id: str, slug: str, messages: list[dict[str, Any]], model_config: dict[str, Any], now: int
    ) -> PromptVersion:
        with self._write() as conn:
            (last,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM prompt_versions WHERE project_id = ? AND slug = ?",
                (project_id, slug),
            ).fetchone()
            conn.execute(
                "INSERT INTO prompt_versions (project_id, slug, version, messages, model_config, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (project_id, slug, last + 1, orjson.dumps(messages), orjson.dumps(model_config), now),
            )
        return PromptVersion(slug, last + 1, messages, model_config, now)

    def list_prompt_versions(self, project_id: str, slug: str) -> list[PromptVersion]:
        rows = self._conn().execute(
            "SELECT slug, version, messages, model_config, created_at FROM prompt_versions "
            "WHERE project_id = ? AND slug = ? ORDER BY version",
            (project_id, slug),
        )
        return [_prompt_version(row) for row in rows]

    def get_prompt_version(self, project_id: str, slug: str, version: int | None) -> PromptVersion | None:
        row = (
            self._conn()
            .execute(
                "SELECT v.slug, v.version, v.messages, v.model_config, v.created_at FROM prompt_versions v "
                "JOIN prompts p ON p.project_id = v.project_id AND p.slug = v.slug "
                "WHERE v.project_id = ? AND v.slug = ? AND v.version = coalesce(?, p.published_version)",
                (project_id, slug, version),
            )
            .fetchone()
        )
        return _prompt_version(row) if row else None

    def publish_prompt_version(self, project_id: str, slug: str, version: int) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "UPDATE prompts SET published_version = ? WHERE project_id = ? AND slug = ? AND EXISTS ("
                    "SELECT 1 FROM prompt_versions WHERE project_id = ? AND slug = ? AND version = ?)",
                    (version, project_id, slug, project_id, slug, version),
                ).rowcount
                > 0
            )

    # ---- stored responses ---------------------------------------------------------

    def add_response(self, response: StoredResponse) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO responses ({responses_sql.INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                responses_sql.insert_params(response),
            )

    def get_response(self, response_id: str, project_id: str) -> StoredResponse | None:
        row = (
            self._conn()
            .execute(responses_sql.SELECT + " WHERE id = ? AND project_id = ?", (response_id, project_id))
            .fetchone()
        )
        return responses_sql.stored_response(row) if row else None

    def delete_expired_responses(self, created_before: int, limit: int) -> int:
        with self._write() as conn:
            return conn.execute(responses_sql.delete_expired_sql("?"), (created_before, limit)).rowcount

    def delete_response(self, response_id: str, project_id: str) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "DELETE FROM responses WHERE id = ? AND project_id = ?", (response_id, project_id)
                ).rowcount
                > 0
            )

    # ---- workers ------------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, heartbeat_at) VALUES (?, ?, ?, ?)",
                (info.id, info.host, info.pid, info.heartbeat_at),
            )

    def heartbeat(self, worker_id: str, now: float) -> bool:
        with self._write() as conn:
            return conn.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (now, worker_id)).rowcount > 0

    def list_workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(*r) for r in self._conn().execute("SELECT id, host, pid, heartbeat_at FROM workers")]

    def reap_worker(self, worker_id: str) -> int:
        requeueable = _is("state", request_sources(RequestState.QUEUED))
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM requests INDEXED BY requests_running WHERE {requeueable} AND worker_id = ?",
                    (worker_id,),
                )
            ]
            conn.executemany(
                f"UPDATE requests SET state = '{_QUEUED}', worker_id = NULL WHERE id = ?", [(i,) for i in ids]
            )
            conn.executemany(
                "UPDATE batches SET requeued = 1 WHERE pk = ?", [(pk,) for pk in {rid >> LINE_BITS for rid in ids}]
            )
            conn.execute("UPDATE batches SET owner = NULL WHERE owner = ?", (worker_id,))
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
            return len(ids)

    def requeue_orphans(self) -> int:
        requeueable = _is("state", request_sources(RequestState.QUEUED))
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM requests INDEXED BY requests_running WHERE {requeueable} "
                    "AND worker_id NOT IN (SELECT id FROM workers)"
                )
            ]
            conn.executemany(
                f"UPDATE requests SET state = '{_QUEUED}', worker_id = NULL WHERE id = ?", [(i,) for i in ids]
            )
            conn.executemany(
                "UPDATE batches SET requeued = 1 WHERE pk = ?", [(pk,) for pk in {rid >> LINE_BITS for rid in ids}]
            )
            conn.execute("UPDATE batches SET owner = NULL WHERE owner NOT IN (SELECT id FROM workers)")
            return len(ids)

    def claim_batch_job(self, worker_id: str, now: int) -> BatchJob | None:
        # look without the write lock first: this runs on every turn of every worker's loop
        row = (
            self._conn()
            .execute(
                # what `job_kind` asks for, as SQL
                f"SELECT {BATCH_COLUMNS}, pk FROM batches WHERE ({_is('status', JOB_OF_STATUS)} "
                "OR (status = ? AND (expires_at <= ? OR upstream IS NOT NULL))) "
                "AND owner IS NULL AND wake_at <= ? ORDER BY pk LIMIT 1",
                (RUNNABLE_STATUS.value, now, now),
            )
            .fetchone()
        )
        if row is None:
            return None
        with self._write() as conn:
            claimed = conn.execute(
                "UPDATE batches SET owner = ? WHERE pk = ? AND owner IS NULL AND status = ?",
                (worker_id, row[-1], row[5]),
            ).rowcount
        if not claimed:
            return None
        batch = _batch(row[:-1])
        kind = job_kind(batch, now)
        assert kind is not None, "the query selects only batches that need a job"
        return BatchJob(kind, batch, worker_id)

    def release_batch_job(self, batch_id: str, worker_id: str, wake_at: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE batches SET owner = NULL, wake_at = ? WHERE id = ? AND owner = ?",
                (wake_at, batch_id, worker_id),
            )

    def claim_requests(self, worker_id: str, limit: int, now: int) -> list[ClaimedRequest]:
        claims: list[ClaimedRequest] = []
        with self._write() as conn:
            runnable = conn.execute(
                scheduling_sql.candidates_sql(
                    "status = ? AND expires_at > ? AND (claim_cursor < total OR requeued) "
                    f"AND upstream IS NULL AND {lifecycle_sql.NOT_PAUSED} AND budget_paused_at IS NULL "
                ),
                (RUNNABLE_STATUS.value, now),
            ).fetchall()
            # core decides the shares (fair across projects, keys, batches; deadlines first);
            # slots a batch cannot use are claimed on the next call
            for candidate, want in plan_claims([scheduling_sql.candidate(r) for r in runnable], limit, now):
                claims += self._claim_lines(conn, worker_id, candidate.ref, candidate.project_id, want)
        return claims

    def _claim_lines(
        self, conn: sqlite3.Connection, worker_id: str, batch: tuple[Any, ...], project_id: str, want: int
    ) -> list[ClaimedRequest]:
        """Claim up to `want` lines of one batch: requeued rows first, then fresh lines."""
        pk, batch_id, file_id, endpoint, cursor, total, requeued = batch
        claimable = _is("state", request_sources(RequestState.RUNNING))
        base = pk << LINE_BITS
        taken: list[tuple[int, int, int, int]] = []  # (line, offset, length, attempts)
        if requeued:
            rows = conn.execute(
                "SELECT id, offset, length, attempts FROM requests INDEXED BY requests_queued "
                f"WHERE {claimable} AND id BETWEEN ? AND ? ORDER BY id LIMIT ?",
                (base, base | LINE_MASK, want),
            ).fetchall()
            conn.executemany(
                f"UPDATE requests SET state = '{_RUNNING}', worker_id = ?, attempts = attempts + 1 WHERE id = ?",
                [(worker_id, r[0]) for r in rows],
            )
            taken += [(r[0] & LINE_MASK, r[1], r[2], r[3] + 1) for r in rows]
            requeued = len(rows) == want
        fresh = list(self._lines(conn, pk, cursor, min(cursor + want - len(taken), total)))
        execute_values(
            conn,
            "INSERT INTO requests (id, offset, length, state, worker_id, attempts) VALUES {values}",
            [(base | line, offset, length, _RUNNING, worker_id, 1) for line, offset, length in fresh],
        )
        taken += [(line, offset, length, 1) for line, offset, length in fresh]
        conn.execute(
            "UPDATE batches SET claim_cursor = ?, requeued = ? WHERE pk = ?",
            (cursor + len(fresh), requeued, pk),
        )
        return [ClaimedRequest(batch_id, file_id, endpoint, *t, project_id) for t in taken]

    def record_results(self, worker_id: str, results: list[RequestResult], now: int) -> None:
        if bad := {r.state for r in results} - RESULT_STATES:
            raise ValueError(f"a run cannot end {', '.join(sorted(bad))}")
        totals: dict[str, list[float]] = {}
        with self._write() as conn:
            # only rows this worker still holds are written: one that was reaped and
            # requeued while it ran belongs to someone else now
            held = id_set(
                conn,
                "SELECT group_concat(id) FROM requests INDEXED BY requests_running "
                f"WHERE state = '{_RUNNING}' AND worker_id = ?",
                (worker_id,),
            )
            keyed = (((self._pk(r.batch_id) << LINE_BITS) | r.line, r) for r in results)
            latest = {rid: r for rid, r in keyed if rid in held}  # a line twice in a flush: its last result
            execute_values(
                conn,
                "WITH v(id, state, attempts, request_id, custom_id, status_code, result, error_code, error_message, "
                "input_tokens, output_tokens, cost, latency_ms, backend, model) AS (VALUES {values}) "
                "UPDATE requests SET state = v.state, attempts = v.attempts, worker_id = NULL, "
                "request_id = v.request_id, custom_id = coalesce(v.custom_id, requests.custom_id), "
                "status_code = v.status_code, result = v.result, error_code = v.error_code, "
                "error_message = v.error_message, input_tokens = v.input_tokens, output_tokens = v.output_tokens, "
                "cost = v.cost, latency_ms = v.latency_ms, backend = v.backend, model = v.model "
                "FROM v WHERE requests.id = v.id",
                [
                    (
                        rid, r.state.value, r.attempts, r.request_id, r.custom_id, r.status_code, r.body, r.error_code,
                        r.error_message, r.input_tokens, r.output_tokens, r.cost, r.latency_ms, r.backend, r.model,
                    )
                    for rid, r in latest.items()
                ],
            )  # fmt: skip
            metered = [
                ledger_sql.batch_params(r, rid >> LINE_BITS, now)
                for rid, r in latest.items()
                if r.state in METERED_STATES
            ]
            execute_values(
                conn,
                f"WITH v({ledger_sql.LINE_COLUMNS}) AS (VALUES {{values}}) " + ledger_sql.lines_insert_sql("v"),
                metered,
            )
            rollup_sql.add_batch_lines(conn, "?", metered)
            for r in latest.values():
                t = totals.setdefault(r.batch_id, [0, 0, 0, 0, 0.0])
                t[0] += r.state == RequestState.SUCCEEDED
                t[1] += r.state == RequestState.FAILED
                t[2] += r.input_tokens
                t[3] += r.output_tokens
                t[4] += r.cost
            for batch_id, (done, failed, tokens_in, tokens_out, cost) in totals.items():
                pk = self._pk(batch_id)
                conn.execute(
                    "UPDATE batches SET completed = completed + ?, failed = failed + ?, "
                    "input_tokens = input_tokens + ?, output_tokens = output_tokens + ?, cost = cost + ? WHERE pk = ?",
                    (done, failed, tokens_in, tokens_out, cost, pk),
                )
                self._to_finalizing(conn, pk, now, "completed + failed >= total")

    # ---- rate limits (core/ratelimit.py) ----------------------------------------------

    def rate_limit_step(
        self, key_id: str, now: float, count_running: bool, step: ratelimit_sql.Step, wait: bool = True
    ) -> bool:
        if not wait:
            return self._try_rate_limit_step(key_id, now, count_running, step)
        with self._write() as conn:  # BEGIN IMMEDIATE: steps of every process run one at a time
            ratelimit_sql.run_step(conn, "?", key_id, now, count_running, step)
        return True

    def _try_rate_limit_step(self, key_id: str, now: float, count_running: bool, step: ratelimit_sql.Step) -> bool:
        """The step, if the database's write lock is free now. On a connection that never
        waits for the lock and never checkpoints the WAL: either could stall the event
        loop this runs on."""
        if not self._writer.acquire(blocking=False):
            return False  # another thread of this process is writing
        conn = self._conn(waits=False)
        try:
            conn.execute("BEGIN IMMEDIATE")
            ratelimit_sql.run_step(conn, "?", key_id, now, count_running, step)
            conn.execute("COMMIT")
            return True
        except sqlite3.OperationalError:
            # another process is writing (or the disk is full: the waiting step that the
            # caller takes instead reports it as such); nothing was written
            return False
        finally:
            if conn.in_transaction:  # never leave a connection holding the write lock
                conn.execute("ROLLBACK")
            self._writer.release()

    def set_batch_pacing(self, batch_id: str, until: float | None, note: str | None) -> None:
        with self._write() as conn:
            conn.execute(ratelimit_sql.set_pacing_sql("?"), (batch_id, until, note))

    def batch_pacing(self, batch_ids: list[str]) -> dict[str, tuple[float, str]]:
        if not batch_ids:
            return {}
        rows = self._conn().execute(ratelimit_sql.pacing_sql("?", len(batch_ids)), batch_ids)
        return {batch_id: (until, note) for batch_id, until, note in rows}

    # ---- the ledger -----------------------------------------------------------------

    def add_ledger_entry(self, entry: LedgerEntry) -> None:
        with self._write() as conn:
            entry.id = conn.execute(ledger_sql.insert_sql("?"), ledger_sql.entry_params(entry)).lastrowid or 0
            rollup_sql.add_entries(conn, "?", [entry])

    def list_ledger(self, query: LedgerQuery) -> Page[LedgerEntry]:
        sql, params = ledger_sql.select_sql(query, "?")
        rows = self._conn().execute(sql, params).fetchall()
        return Page([ledger_sql.entry(r) for r in rows[: query.limit]], len(rows) > query.limit)

    def ledger_usage(self, query: LedgerQuery, group_by: tuple[str, ...], bucket_seconds: int) -> list[UsageRow]:
        run = lambda sql, params: self._conn().execute(sql, params).fetchall()  # noqa: E731
        return rollup_sql.usage(run, query, group_by, bucket_seconds, "?", "CAST(started_at AS INTEGER)")

    # ---- budgets and /metrics -------------------------------------------------------

    def key_spend(self, key_id: str, since: float | None, after: int = 0, upto: int | None = None) -> float:
        sql, params = budgets_sql.spend_sql(key_id, since, after, upto, "?")
        return float(self._conn().execute(sql, params).fetchone()[0])

    def set_budget_pauses(self, key_ids: list[str], now: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        sql, params = budgets_sql.mismatched_sql(key_ids, "?")
        # look without the write lock first: every worker asks every few seconds
        if not self._conn().execute(sql, params).fetchone():
            return [], []
        with self._write() as conn:
            pause, resume = budgets_sql.split(conn.execute(sql, params).fetchall())
            conn.executemany(budgets_sql.pause_sql("?"), [(now, batch_id) for batch_id, _ in pause])
            conn.executemany(budgets_sql.resume_sql("?"), [(batch_id,) for batch_id, _ in resume])
        return pause, resume

    def ledger_max_id(self) -> int:
        return int(self._conn().execute(metrics_sql.MAX_ID_SQL).fetchone()[0])

    def ledger_totals(self, after: int, upto: int | None) -> list[LedgerTotals]:
        sql, params = metrics_sql.totals_sql(after, upto, "?")
        return [metrics_sql.totals_row(r) for r in self._conn().execute(sql, params)]

    def batch_gauges(self) -> BatchGauges:
        conn = self._conn()
        running = int(conn.execute(metrics_sql.RUNNING_SQL).fetchone()[0])
        return metrics_sql.gauges(conn.execute(metrics_sql.GAUGES_SQL).fetchall(), running)

    # ---- the billing outbox (core/billing.py) ---------------------------------------

    def add_billing_events(self, events: list[BillingEvent]) -> int:
        with self._write() as conn:
            return sum(conn.execute(billing_sql.insert_sql("?"), billing_sql.event_params(e)).rowcount for e in events)

    def billing_totals(self, since: int) -> list[BillingTotal]:
        return [billing_sql.total(r) for r in self._conn().execute(billing_sql.totals_sql("?"), (since,))]

    def claim_billing_event(self, now: float, lease: float) -> BillingEvent | None:
        with self._write() as conn:
            row = conn.execute(billing_sql.due_sql("?"), (now,)).fetchone()
            if row is None:
                return None
            conn.execute(billing_sql.lease_sql("?"), (now + lease, row[0]))
        return billing_sql.event(row[1:])

    def record_billing_attempt(self, attempt: BillingAttempt, status: str, next_attempt_at: float) -> None:
        with self._write() as conn:
            conn.execute(billing_sql.attempt_insert_sql("?"), billing_sql.attempt_params(attempt))
            conn.execute(billing_sql.outcome_sql("?"), billing_sql.outcome_params(attempt, status, next_attempt_at))

    def list_billing_events(self, status: str | None, limit: int) -> list[BillingEvent]:
        sql, params = billing_sql.list_sql("?", status)
        return [billing_sql.event(r) for r in self._conn().execute(sql, [*params, limit])]

    def list_billing_attempts(self, identifier: str) -> list[BillingAttempt]:
        rows = self._conn().execute(billing_sql.attempts_sql("?"), (identifier,))
        return [BillingAttempt(*r) for r in rows]

    def retry_failed_billing_events(self, now: float) -> int:
        with self._write() as conn:
            return conn.execute(billing_sql.retry_failed_sql("?"), (now,)).rowcount

    def billing_summary(self) -> BillingSummary:
        return billing_sql.summary(self._conn().execute(billing_sql.SUMMARY_SQL).fetchall())

    def search_batches(self, query: BatchSearch) -> Page[BatchRecord]:
        sql, params = browse_sql.search_batches_sql(query, "?", BATCH_COLUMNS)
        rows = self._conn().execute(sql, params).fetchall()
        return Page([_batch(r) for r in rows[: query.limit]], len(rows) > query.limit)

    def list_request_rows(
        self, batch_id: str, state: RequestState | None, after_line: int | None, limit: int
    ) -> Page[RequestRow]:
        sql, params = browse_sql.request_rows_sql(*self._range(batch_id), state, after_line, limit, "?")
        rows = self._conn().execute(sql, params).fetchall()
        return Page([browse_sql.request_row(r) for r in rows[:limit]], len(rows) > limit)

    @staticmethod
    def _to_finalizing(conn: sqlite3.Connection, pk: int, now: int, condition: str = "1") -> None:
        """Move a batch whose every line is done on to writing its result files."""
        conn.execute(
            "UPDATE batches SET status = ?, finalizing_at = ? "
            f"WHERE pk = ? AND {_is('status', batch_sources(BatchStatus.FINALIZING))} AND {condition}",
            (BatchStatus.FINALIZING.value, now, pk),
        )

    # ---- pause, resume, retry links -----------------------------------------------

    def pause_batch(self, batch_id: str, now: int) -> bool:
        with self._write() as conn:
            return conn.execute(lifecycle_sql.pause_sql("?"), (now, batch_id)).rowcount > 0

    def resume_batch(self, batch_id: str) -> bool:
        with self._write() as conn:
            return conn.execute(lifecycle_sql.resume_sql("?"), (batch_id,)).rowcount > 0

    def link_retry(self, batch_id: str, retry_id: str) -> bool:
        with self._write() as conn:  # BEGIN IMMEDIATE: the read and the write in one step
            return lifecycle_sql.link_retry(conn, "?", "", batch_id, retry_id)

    # ---- webhooks -----------------------------------------------------------------

    def add_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        with self._write() as conn:
            conn.execute(webhooks_sql.insert_endpoint_sql("?"), webhooks_sql.endpoint_params(endpoint))

    def list_webhook_endpoints(self, project_id: str) -> list[WebhookEndpoint]:
        rows = self._conn().execute(webhooks_sql.select_endpoints_sql("?") + " ORDER BY created_at, id", (project_id,))
        return [webhooks_sql.endpoint(r) for r in rows]

    def get_webhook_endpoint(self, endpoint_id: str, project_id: str) -> WebhookEndpoint | None:
        sql = webhooks_sql.select_endpoints_sql("?") + " AND id = ?"
        row = self._conn().execute(sql, (project_id, endpoint_id)).fetchone()
        return webhooks_sql.endpoint(row) if row else None

    def delete_webhook_endpoint(self, endpoint_id: str, project_id: str) -> bool:
        with self._write() as conn:
            return webhooks_sql.delete_endpoint(conn, "?", endpoint_id, project_id)

    def batch_event(self, batch_id: str) -> WebhookEvent | None:
        row = self._conn().execute(webhooks_sql.select_event_sql("?"), (batch_id,)).fetchone()
        return webhooks_sql.event(row) if row else None

    def claim_webhook_deliveries(self, now: int, limit: int, lease_until: int) -> list[DueDelivery]:
        with self._write() as conn:  # one writer at a time: no row is claimed twice
            return webhooks_sql.claim(conn, "?", "", now, limit, lease_until)

    def record_webhook_attempt(
        self, delivery_id: int, attempt: WebhookAttempt, next_attempt_at: int | None, delivered: bool
    ) -> None:
        with self._write() as conn:
            webhooks_sql.record_attempt(conn, "?", delivery_id, attempt, next_attempt_at, delivered)

    def list_webhook_deliveries(self, endpoint_id: str, project_id: str, limit: int) -> list[WebhookDelivery]:
        return webhooks_sql.list_deliveries(self._conn(), "?", endpoint_id, project_id, limit)
