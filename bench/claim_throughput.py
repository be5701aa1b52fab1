"""Claim + record throughput of the stores (issue 16): N processes each loop
`claim_requests(256)` → `record_results` on one batch until its lines are done, on
SQLite (one data dir) and on PostgreSQL (one database), 1, 2 and 4 processes.

No backend and no HTTP: this is the store's share of every line's cost. The reference,
measured in the same run, is SQLite with one process (the one-machine default); the
ratios say what PostgreSQL costs per line and how it scales with processes, where
SQLite serialises every writer.

    .venv/bin/python bench/claim_throughput.py [--lines 100000] [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import multiprocessing
import secrets
import tempfile
import time
from array import array
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from batchgate.core.models import BatchRecord, BatchStatus, FileRecord, RequestResult, RequestState
from batchgate.core.ports import Store, WorkerInfo
from batchgate.store.postgres import PostgresStore
from batchgate.store.sqlite import SQLiteStore

NOW = 1_800_000_000
CLAIM = 256
CHUNK = 100_000  # lines per index chunk, as validation writes them


def open_store(where: str) -> Store:
    return (
        PostgresStore(where, pool_size=2, migrate=False) if where.startswith("postgresql") else SQLiteStore(Path(where))
    )


def prepare(store: Store, lines: int) -> str:
    """An in_progress batch of `lines` lines, through the Store API as validation makes it."""
    store.add_file(FileRecord("file-bench", "proj", "batch", "in.jsonl", 100 * lines, NOW))
    batch = BatchRecord(
        id="batch_bench", project_id="proj", endpoint="/v1/chat/completions", input_file_id="file-bench",
        completion_window="24h", status=BatchStatus.VALIDATING, created_at=NOW, expires_at=NOW + 86_400,
    )  # fmt: skip
    store.add_batch(batch)
    job = store.claim_batch_job("validator", NOW)
    assert job is not None
    for first in range(0, lines, CHUNK):
        index = array("q", [x for i in range(first, min(first + CHUNK, lines)) for x in (i, 100 * i, 100)])
        store.add_lines(batch.id, index, "validator")
    assert store.start_batch(batch.id, lines, NOW, "validator")
    store.release_batch_job(batch.id, "validator", 0)
    return batch.id


def work(where: str, worker: str, start: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    store = open_store(where)
    store.register_worker(WorkerInfo(worker, "bench", 0, NOW))
    start.wait()
    body = b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "echo"}}]}'
    while claims := store.claim_requests(worker, CLAIM, NOW):
        results = [
            RequestResult(c.batch_id, c.line, RequestState.SUCCEEDED, 1, f"req-{c.line}", f"c{c.line}", 200, body)
            for c in claims
        ]
        store.record_results(worker, results, NOW)
    store.close()


def run(where: str, processes: int, lines: int) -> float:
    """Lines per second for `processes` processes claiming and recording all `lines`."""
    store = open_store(where)
    batch_id = prepare(store, lines)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    procs = [context.Process(target=work, args=(where, f"w{n}", start)) for n in range(processes)]
    for p in procs:
        p.start()
    time.sleep(2)  # every process connected and registered before the clock starts
    began = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - began
    batch = store.get_batch(batch_id, None)
    assert batch is not None and batch.completed == lines, "every line recorded once"
    assert batch.status == BatchStatus.FINALIZING
    store.close()
    return lines / elapsed


def new_postgres_database(admin_url: str) -> tuple[str, str]:
    from batchgate.store.migrate import upgrade_postgres

    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    upgrade_postgres(url)
    return name, url


def drop_postgres_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="an admin connection")
    parser.add_argument("--processes", default="1,2,4")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    rates: dict[tuple[str, int], float] = {}
    for processes in counts:
        with tempfile.TemporaryDirectory() as tmp:
            rates["sqlite", processes] = run(str(Path(tmp) / "bench.db"), processes, args.lines)
        name, url = new_postgres_database(args.pg)
        try:
            rates["postgres", processes] = run(url, processes, args.lines)
        finally:
            drop_postgres_database(args.pg, name)
    reference = rates["sqlite", counts[0]]
    print(f"claim + record of {args.lines:,} lines, {CLAIM} per claim; reference: SQLite, {counts[0]} process(es)")
    print(f"{'store':10} {'processes':>9} {'lines/s':>10} {'× reference':>12}")
    for (store, processes), rate in sorted(rates.items()):
        print(f"{store:10} {processes:>9} {rate:>10,.0f} {rate / reference:>12.2f}")


if __name__ == "__main__":
    main()
