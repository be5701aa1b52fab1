"""Retention sweep: GET /health while the worker deletes 10,000 expired files.

One `batchgate serve` subprocess on 127.0.0.1 (in-process worker, scripted backend,
BATCHGATE_SWEEP_INTERVAL from --interval). Once it is up, --files expired files (rows
with `expires_at` in the past and their bytes) are written into its data dir from this
process, as uploads that expired would be; the worker's next sweep deletes them a chunk
at a time, beside the API in the same process.

Reference, same run: GET /health on the same server before the files are written (idle).
Measured: GET /health back to back on one keep-alive connection while the files are
swept: from the last probe of the blob dir (every 5 calls) that still sees every file to
the first that sees none. Prints p50/p99/max, the sweep's files per
second, and p99 / idle p99. No target: the numbers are recorded (bench/RESULTS.md).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

from batchgate.store import LocalBlobStore, SQLiteStore

NAME = "retention_sweep"


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def health(c: httpx.Client) -> float:
    t0 = time.perf_counter()
    c.get("/health", timeout=60).raise_for_status()
    return time.perf_counter() - t0


def seed(data_dir: Path, count: int) -> list[str]:
    """`count` expired files of the default project: 1 KiB of bytes each, and their rows
    in one transaction (as the store writes them; quick, so seeding ends before a sweep)."""
    store, blobs = SQLiteStore(data_dir / "batchgate.db"), LocalBlobStore(data_dir / "files")
    try:
        project = store.ensure_project("default", int(time.time())).id
    finally:
        store.close()
    expired = int(time.time()) - 60
    ids = [f"file-sweep{i:08d}" for i in range(count)]
    for file_id in ids:  # plain writes (no fsync each, unlike an upload): seeding is not measured
        (blobs.root / file_id).write_bytes(b"x" * 1024)
    with sqlite3.connect(data_dir / "batchgate.db", timeout=60) as conn:
        conn.executemany(
            "INSERT INTO files (id, project_id, purpose, filename, bytes, created_at, expires_at) "
            "VALUES (?, ?, 'batch', 'in.jsonl', 1024, ?, ?)",
            [(file_id, project, expired - 3600, expired) for file_id in ids],
        )
    return ids


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 0)
    parser.add_argument("--files", type=int, default=10_000, help="expired files to sweep (default 10,000)")
    parser.add_argument("--interval", type=float, default=30.0, help="BATCHGATE_SWEEP_INTERVAL (default 30 s)")
    parser.add_argument("--idle-samples", type=int, default=2000, help="GET /health calls before seeding")
    args = parser.parse_args()
    env = {"BATCHGATE_SWEEP_INTERVAL": args.interval}
    with bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir) as server, bc.client(server) as c:
        for _ in range(50):
            health(c)  # warm the connection and the route
        idle = [health(c) for _ in range(args.idle_samples)]
        t_seed = time.perf_counter()
        ids = seed(server.data_dir, args.files)
        seeded_s = time.perf_counter() - t_seed
        blob_dir = server.data_dir / "files"
        calls: list[tuple[float, float]] = []  # (when it ended, latency)
        before_first = last_gone = None  # probe times (perf_counter)
        deadline = time.perf_counter() + args.interval * 3 + 600
        while time.perf_counter() < deadline:
            calls.append((time.perf_counter(), health(c)))
            if len(calls) % 5 == 0:
                remaining = sum(1 for e in os.scandir(blob_dir) if e.name.startswith("file-sweep"))
                now = time.perf_counter()
                if remaining == len(ids):
                    before_first = now
                if remaining == 0:
                    last_gone = now
                    break
        if last_gone is None or before_first is None:
            sys.exit(f"the {len(ids):,} files were not swept in time")
    # the sweep ran between the last probe that saw every file and the first that saw none
    sweep_s = last_gone - before_first
    during = [latency for t, latency in calls if before_first <= t <= last_gone]
    idle_p99 = percentile(idle, 0.99)
    p50, p99, worst = percentile(during, 0.5), percentile(during, 0.99), max(during) * 1000
    table = [
        ("files", f"{args.files:,} expired (1 KiB each), written in {seeded_s:.1f} s"),
        ("idle GET /health", f"p50 {percentile(idle, 0.5):.2f} ms, p99 {idle_p99:.2f} ms"),
        ("sweep", f"at most {sweep_s:.2f} s for all of them: at least {args.files / sweep_s:,.0f} files/s"),
        ("GET /health during", f"{len(during):,} calls"),
        ("during p50", f"{p50:.2f} ms"),
        ("during p99", f"{p99:.2f} ms"),
        ("during max", f"{worst:.1f} ms"),
        ("ratio p99 during / idle", f"{p99 / idle_p99:.1f}"),
    ]
    result = bc.default_result(args) | {
        "idle_p99_ms": idle_p99,
        "during_p50_ms": p50,
        "during_p99_ms": p99,
        "during_max_ms": worst,
        "sweep_s": sweep_s,
        "ratio_p99": p99 / idle_p99,
    }
    bc.report(NAME, args, table, result, bc.Targets())
    print(f"INFO health_p99_ratio_sweep_over_idle: {p99 / idle_p99:.1f}")


if __name__ == "__main__":
    main()
