"""Record: run a validated batch through the instant scripted backend, in_progress -> completed.

Against a real `batchgate serve` subprocess on 127.0.0.1 (in-process worker, default
"scripted" backend: an instant, deterministic echo), with BATCHGATE_CONCURRENCY set by
--concurrency (default 256). The batch is uploaded and validated first (not timed); the
clock starts at the first poll that sees `in_progress` and stops at the first that sees
`completed` (GET /v1/batches/{id} every 20 ms). That span covers claiming every row,
running it on the backend, recording its result, and finalizing (writing the output file).

Reference, same run: a fresh WAL SQLite database (synchronous=NORMAL, like the store),
one transaction, `executemany` INSERT of the same number of rows (id, custom_id, result
blob of the size the scripted backend answers); best of two runs, before and after.

Target: >= 10,000 lines/s end to end; the ratio to the reference is printed for
comparison across machines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

NAME = "record"
RATE_TARGET = 10_000.0


def reference(lines: int, line_bytes: int, tmp_dir: Path | None) -> float:
    """Seconds to insert `lines` result rows into a fresh WAL database in one transaction."""
    rows = [
        (i, f"req-{i:07d}", orjson.dumps(bc.echo_body(i, bc.input_content(i, line_bytes)))) for i in range(1, lines + 1)
    ]
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-ref-", dir=tmp_dir))
    try:
        conn = sqlite3.connect(work / "ref.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY, custom_id TEXT NOT NULL, result BLOB)")
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO requests (id, custom_id, result) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 100_000)
    parser.add_argument("--concurrency", type=int, default=256, help="BATCHGATE_CONCURRENCY (default 256)")
    parser.add_argument("--line-bytes", type=int, default=200, help="approximate bytes per input line")
    parser.add_argument(
        "--pg", default=None, help="a PostgreSQL admin URL: the store in a fresh database there (default: SQLite)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="separate `batchgate worker` processes (default 0: the in-process one)"
    )
    args = parser.parse_args()
    n = args.lines
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-input-", dir=args.tmp_dir))
    try:
        path = work / "input.jsonl"
        size = bc.write_input(path, n, args.line_bytes)
        print(f"generated {n:,} lines, {bc.mb(size)}")
        ref_before = reference(n, args.line_bytes, args.tmp_dir)
        print(f"reference (SQLite executemany insert): {ref_before:.2f} s")
        env = {"BATCHGATE_CONCURRENCY": str(args.concurrency)}
        with contextlib.ExitStack() as stack:
            if args.pg:
                env |= stack.enter_context(bc.fresh_database(args.pg, f"bg_bench_record_{os.getpid()}"))
            serve_args = ("--no-worker",) if args.workers else ()
            server = stack.enter_context(bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir, serve_args=serve_args))
            for k in range(args.workers):
                stack.enter_context(bc.worker_process(server, k))
            c = stack.enter_context(bc.client(server))
            file_obj = bc.upload(c, path)
            batch = bc.create_batch(c, file_obj["id"])
            batch, seen = bc.wait_status(c, batch["id"], "in_progress", args.timeout, args.poll)
            skipped = batch["status"] != "in_progress"
            seen["_poll_latencies"].clear()
            with bc.profiler(args.profile, server.pid, NAME, args.profile_gil, args.profile_idle):
                batch, seen = bc.wait_status(c, batch["id"], "completed", args.timeout, args.poll, seen)
            t_ip, t_fin, t_done = seen["in_progress"], seen["finalizing"], seen["completed"]
            counts = batch["request_counts"]
            if counts["completed"] != n or counts["failed"]:
                raise RuntimeError(f"unexpected request counts {counts}")
            rss_peak = server.rss.peak(t_ip, t_done)
            time.sleep(0.05)
            cpu = server.rss.cpu_cores(t_ip, t_done)
        ref_after = reference(n, args.line_bytes, args.tmp_dir)
        print(f"reference again: {ref_after:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if skipped:
        print("warning: the batch was past in_progress at the first poll; the run phase is understated")
    ref = min(ref_before, ref_after)
    ref_rate = n / ref
    run_s, fin_s, total_s = t_fin - t_ip, t_done - t_fin, t_done - t_ip
    rate = n / total_s
    ratio = rate / ref_rate
    workers = f"{args.workers} separate `batchgate worker` processes" if args.workers else "the server's in-process one"
    table = [
        ("lines", f"{n:,} ({bc.mb(size)} input)"),
        ("store, workers", f"{'PostgreSQL' if args.pg else 'SQLite'}, {workers}"),
        ("BATCHGATE_CONCURRENCY", str(args.concurrency)),
        ("reference SQLite insert", f"{ref:.2f} s = {ref_rate:,.0f} rows/s (runs: {ref_before:.2f}, {ref_after:.2f})"),
        ("in_progress -> finalizing", f"{run_s:.2f} s ({n / run_s:,.0f} lines/s)"),
        ("finalizing -> completed", f"{fin_s:.2f} s (output file written)"),
        ("in_progress -> completed", f"{total_s:.2f} s = {rate:,.0f} lines/s"),
        ("ratio lines/s / reference rows/s", f"{ratio:.3f} (reference is {1 / ratio:.1f}x faster)"),
        ("GET /v1/batches/{id} during the run", bc.latency_summary(seen["_poll_latencies"])),
        (f"server CPU during the run (cores busy, of {os.cpu_count()}; workers apart not counted)", f"{cpu:.2f}"),
        ("server peak RSS during the run", bc.mb(rss_peak)),
    ]
    result = bc.default_result(args) | {
        "lines": n,
        "concurrency": args.concurrency,
        "reference_s": ref,
        "reference_runs_s": [ref_before, ref_after],
        "reference_rows_per_s": ref_rate,
        "run_s": run_s,
        "finalize_s": fin_s,
        "total_s": total_s,
        "lines_per_s": rate,
        "ratio_rate_over_reference": ratio,
        "poll_interval_s": args.poll,
        "poll_latencies_s": seen["_poll_latencies"],
        "server_cpu_cores": cpu,
        "server_rss_peak_bytes": rss_peak,
    }
    targets = bc.Targets()
    targets.check(f"record_lines_per_s>={RATE_TARGET:g}", rate, rate >= RATE_TARGET)
    bc.report(NAME, args, table, result, targets)
    print(f"INFO record_ratio_vs_sqlite_insert: {ratio:.3f}")


if __name__ == "__main__":
    main()
