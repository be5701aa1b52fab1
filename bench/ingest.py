"""Ingest: upload a large JSONL input and wait until the batch is validated (`in_progress`).

Measures, against a real `batchgate serve` subprocess on 127.0.0.1:
  upload      POST /v1/files, the multipart body streamed from disk by httpx
  validation  POST /v1/batches -> first GET /v1/batches/{id} that says in_progress
              (polled every 20 ms); this is the worker's validation job: parse and
              check every line, store the line index
  total       upload + validation
Each of --repeat runs (default 3) gets a fresh server and data dir; the median run
counts (all runs are printed and saved). Once a batch is in_progress its lines start
running; the clock has stopped by then.

Reference, same file, same run: `for line in open(path, 'rb'): orjson.loads(line)`,
timed before every run and once after the last; the fastest counts, so a noisy
neighbour slowing the reference does not flatter the ratio.
Server memory: psutil RSS of the server process sampled every 20 ms (peak over all runs).

Targets: total / reference <= 4, server peak RSS <= 300 MB.

`--store postgres+s3` runs the server as one host of many would (issue 16): the store on
PostgreSQL (a fresh database per run on --pg, dropped after) and file contents in S3
(moto's server, started by the benchmark). Target there: total / reference <= 6.
`--store postgres` (files in the data dir) separates the database's share from S3's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

NAME = "ingest"
RATIO_TARGET = 4.0
SHARED_RATIO_TARGET = 6.0  # PostgreSQL + S3: every write and read crosses the network
RSS_TARGET_MB = 300.0


@dataclass
class Run:
    upload_s: float
    validation_s: float
    total_s: float
    rss_idle: int
    rss_upload_peak: int
    rss_peak: int
    rss_end: int
    cpu_cores_validation: float
    poll_latencies_s: list[float]


def reference(path: Path) -> float:
    loads = orjson.loads
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            loads(line)
    return time.perf_counter() - t0


@contextlib.contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port with one bucket; the env that points a server at it."""
    import boto3
    import httpx

    port = bc._free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "BATCHGATE_BLOB_URL": "s3://batchgate-bench/files",
    }
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(env["AWS_ENDPOINT_URL"], timeout=1)
                break
            time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        s3.create_bucket(Bucket="batchgate-bench")
        yield env
    finally:
        proc.kill()
        proc.wait(10)


def one_run(args, path: Path, k: int, env: dict[str, str]) -> Run:  # type: ignore[no-untyped-def]
    with contextlib.ExitStack() as stack:
        if args.store != "sqlite":
            env = env | stack.enter_context(bc.fresh_database(args.pg, f"bg_bench_ingest_{os.getpid()}_{k}"))
        return measured_run(args, path, k, env)


def measured_run(args, path: Path, k: int, env: dict[str, str]) -> Run:  # type: ignore[no-untyped-def]
    with bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir) as server, bc.client(server) as c:
        rss_idle = server.rss.at(time.perf_counter())
        with bc.profiler(args.profile and k == 0, server.pid, NAME, args.profile_gil, args.profile_idle):
            t0 = time.perf_counter()
            file_obj = bc.upload(c, path)
            t1 = time.perf_counter()
            batch = bc.create_batch(c, file_obj["id"])
            batch, seen = bc.wait_status(c, batch["id"], "in_progress", args.timeout, args.poll)
            t2 = seen["in_progress"]
        total_lines = batch["request_counts"]["total"]
        if total_lines != args.lines:
            raise RuntimeError(f"server counted {total_lines} lines, expected {args.lines}")
        time.sleep(0.05)  # one more sample past t2
        return Run(
            upload_s=t1 - t0,
            validation_s=t2 - t1,
            total_s=t2 - t0,
            rss_idle=rss_idle,
            rss_upload_peak=server.rss.peak(t0, t1),
            rss_peak=server.rss.peak(t0, t2),
            rss_end=server.rss.at(t2),
            cpu_cores_validation=server.rss.cpu_cores(t1, t2),
            poll_latencies_s=seen["_poll_latencies"],
        )


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 1_000_000)
    parser.add_argument("--line-bytes", type=int, default=200, help="approximate bytes per input line")
    parser.add_argument("--repeat", type=int, default=3, help="runs, each on a fresh server; the median counts")
    parser.add_argument("--store", choices=["sqlite", "postgres", "postgres+s3"], default="sqlite",
                        help="where the store and the files are (default sqlite: SQLite + the data dir)")  # fmt: skip
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="an admin connection")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-input-", dir=args.tmp_dir))
    refs: list[float] = []
    runs: list[Run] = []
    try:
        path = work / "input.jsonl"
        t = time.perf_counter()
        size = bc.write_input(path, args.lines, args.line_bytes)
        print(
            f"generated {args.lines:,} lines, {bc.mb(size)} ({size / args.lines:.0f} B/line) "
            f"in {time.perf_counter() - t:.1f} s"
        )
        s3_env = contextlib.ExitStack()
        env = s3_env.enter_context(moto_s3()) if args.store == "postgres+s3" else {}
        for k in range(args.repeat):
            refs.append(reference(path))
            run = one_run(args, path, k, env)
            runs.append(run)
            print(
                f"run {k + 1}: reference {refs[-1]:.2f} s; upload {run.upload_s:.2f} s + validation "
                f"{run.validation_s:.2f} s = {run.total_s:.2f} s; peak RSS {bc.mb(run.rss_peak)}"
            )
        refs.append(reference(path))
        print(f"reference after the last run: {refs[-1]:.2f} s")
        s3_env.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref = min(refs)
    med = sorted(runs, key=lambda r: r.total_s)[len(runs) // 2]
    ratio = med.total_s / ref
    ratios = [r.total_s / ref for r in runs]
    rss_peak = max(r.rss_peak for r in runs)
    table = [
        ("lines", f"{args.lines:,} ({size / args.lines:.0f} B/line, {bc.mb(size)})"),
        ("reference orjson.loads loop", f"{ref:.2f} s (fastest of {', '.join(f'{x:.2f}' for x in refs)})"),
        (
            f"runs (fresh server each), median of {len(runs)}",
            "totals " + ", ".join(f"{r.total_s:.2f}" for r in runs) + " s",
        ),
        ("upload", f"{med.upload_s:.2f} s ({size / med.upload_s / bc.MB:.0f} MB/s)"),
        (
            "validation (create -> in_progress)",
            f"{med.validation_s:.2f} s ({args.lines / med.validation_s:,.0f} lines/s)",
        ),
        ("total", f"{med.total_s:.2f} s"),
        (
            "ratio total/reference",
            f"{ratio:.2f}x (upload {med.upload_s / ref:.2f}x + validation {med.validation_s / ref:.2f}x); "
            f"all runs: {', '.join(f'{x:.2f}' for x in ratios)}",
        ),
        ("GET /v1/batches/{id} during validation", bc.latency_summary(med.poll_latencies_s)),
        (f"server CPU during validation (cores busy, of {os.cpu_count()})", f"{med.cpu_cores_validation:.2f}"),
        ("server RSS idle -> end", f"{bc.mb(med.rss_idle)} -> {bc.mb(med.rss_end)}"),
        (
            "server peak RSS (upload / whole run, max of runs)",
            f"{bc.mb(max(r.rss_upload_peak for r in runs))} / {bc.mb(rss_peak)}",
        ),
    ]
    result = bc.default_result(args) | {
        "lines": args.lines,
        "bytes": size,
        "reference_s": ref,
        "reference_runs_s": refs,
        "runs": [asdict(r) for r in runs],
        "upload_s": med.upload_s,
        "validation_s": med.validation_s,
        "total_s": med.total_s,
        "ratio_total_over_reference": ratio,
        "ratios_all_runs": ratios,
        "poll_interval_s": args.poll,
        "server_rss_peak_bytes": rss_peak,
    }
    targets = bc.Targets()
    target = RATIO_TARGET if args.store == "sqlite" else SHARED_RATIO_TARGET
    table.insert(0, ("store", args.store))
    targets.check(f"ingest_ratio<={target:g}", ratio, ratio <= target)
    targets.check(f"ingest_peak_rss_mb<={RSS_TARGET_MB:g}", rss_peak / bc.MB, rss_peak / bc.MB <= RSS_TARGET_MB)
    bc.report(
        NAME + ("" if args.store == "sqlite" else "-" + args.store.replace("+", "-")), args, table, result, targets
    )


if __name__ == "__main__":
    main()
