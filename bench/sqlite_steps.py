"""SQLite writes beside a busy thread: one statement step per row vs. multi-row VALUES.

Python's sqlite3 releases the GIL around every statement step and must take it back
after; while another thread of the process computes, that waits up to the switch
interval (5 ms). An `executemany` steps once per row, so beside a busy thread (in
batchgate: the worker's event loop beside the store's thread) it slows by orders of
magnitude; the store's hot paths write VALUES lists of ROWS_PER_STATEMENT rows instead
(batchgate/store/sqlite_rows.py). This measures both ways, alone and beside a thread that
spins in Python, on a table shaped like the ledger (four secondary indexes), in rounds
(alone and busy alternating). Self-contained, a few seconds per way at the default size.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from batchgate.store.sqlite_rows import execute_values

Rows = list[tuple[object, ...]]


def fresh(path: Path) -> sqlite3.Connection:
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (pk INTEGER PRIMARY KEY, batch TEXT, line INTEGER, tokens INTEGER, cost REAL)")
    for i, cols in enumerate(("batch, line", "batch, pk", "tokens", "line, cost")):
        conn.execute(f"CREATE INDEX t{i} ON t({cols})")
    return conn


def by_executemany(conn: sqlite3.Connection, rows: Rows) -> None:
    conn.executemany("INSERT INTO t (batch, line, tokens, cost) VALUES (?, ?, ?, ?)", rows)


def by_values(conn: sqlite3.Connection, rows: Rows) -> None:
    execute_values(conn, "INSERT INTO t (batch, line, tokens, cost) VALUES {values}", rows)


def timed(path: Path, write: Callable[[sqlite3.Connection, Rows], None], rows: Rows, busy: bool) -> float:
    conn = fresh(path)
    stop = threading.Event()

    def spin() -> None:  # pure-Python work, as an event loop running lines is
        n = 0
        while not stop.is_set():
            n += 1

    spinner = threading.Thread(target=spin)
    if busy:
        spinner.start()
    try:
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        write(conn, rows)
        conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        stop.set()
        if busy:
            spinner.join()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000, help="rows per write (default 2,000: one worker flush)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: Rows = [(f"batch_{i % 7:020d}", i, i * 3, i * 0.5) for i in range(args.rows)]
    ways = {"executemany": by_executemany, "VALUES lists": by_values}
    seconds: dict[tuple[str, bool], list[float]] = {(w, b): [] for w in ways for b in (False, True)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steps.db"
        for _ in range(args.rounds):
            for busy in (False, True):
                for name, write in ways.items():
                    seconds[(name, busy)].append(timed(path, write, rows, busy))
    print(f"{args.rows:,} rows, {args.rounds} rounds (min / median s)")
    for (name, busy), xs in seconds.items():
        print(
            f"  {name:13} {'beside a busy thread' if busy else 'alone':21} {min(xs):8.3f} / {statistics.median(xs):8.3f}"
        )
    for name in ways:
        slowdown = statistics.median(seconds[(name, True)]) / statistics.median(seconds[(name, False)])
        print(f"  {name}: busy / alone = {slowdown:.1f}x")


if __name__ == "__main__":
    main()
