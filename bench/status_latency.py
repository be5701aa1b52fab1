"""Status latency: GET /v1/batches/{id} while a 100,000-line batch records results.

One `batchgate serve` subprocess on 127.0.0.1 (in-process worker, scripted backend,
BATCHGATE_CONCURRENCY from --concurrency). The API and the worker share the process, so
anything the worker does on an event loop, or while holding the GIL, shows up here as
latency of the status call that every client polls.

Reference, same run: the same call on the same server while it is idle (a finished
one-line batch, before and after the big batch; the lower p99 counts, so a noisy
neighbour during one idle window cannot flatter the ratio).

Measured: the big batch is uploaded and validated first (not timed); from the first
poll that sees it `in_progress` until it leaves `in_progress` (every result recorded),
GET /v1/batches/{id} is called back to back on one keep-alive connection, at most
--samples times and for at most --max-seconds. Prints p50/p99/max and p99 / idle p99.
No target: the number is recorded before and after a change (bench/RESULTS.md).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

NAME = "status_latency"


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile of the samples, in ms (nearest rank)."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def sample(c: httpx.Client, batch_id: str, count: int) -> list[float]:
    """`count` back-to-back status calls; their round-trip times in seconds."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        c.get(f"/v1/batches/{batch_id}", timeout=60).raise_for_status()
        out.append(time.perf_counter() - t0)
    return out


def sample_while_running(
    c: httpx.Client, batch_id: str, max_samples: int, max_seconds: float
) -> tuple[list[float], int, int, float]:
    """Status calls while the batch is in_progress: (latencies, completed at the first and
    last sample, seconds sampled)."""
    latencies: list[float] = []
    first = last = -1
    start = time.perf_counter()
    while len(latencies) < max_samples and time.perf_counter() - start < max_seconds:
        t0 = time.perf_counter()
        r = c.get(f"/v1/batches/{batch_id}", timeout=60)
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        batch = r.json()
        if batch["status"] != "in_progress":
            break
        latencies.append(elapsed)
        last = batch["request_counts"]["completed"]
        first = last if first < 0 else first
    return latencies, first, last, time.perf_counter() - start


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 100_000)
    parser.add_argument("--concurrency", type=int, default=256, help="BATCHGATE_CONCURRENCY (default 256)")
    parser.add_argument("--samples", type=int, default=20_000, help="most status calls while the batch runs")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="most seconds of sampling while it runs")
    parser.add_argument("--idle-samples", type=int, default=1000, help="status calls in each idle window")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-input-", dir=args.tmp_dir))
    try:
        big, small = work / "input.jsonl", work / "one.jsonl"
        size = bc.write_input(big, args.lines)
        bc.write_input(small, 1)
        print(f"generated {args.lines:,} lines, {bc.mb(size)}")
        env = {"BATCHGATE_CONCURRENCY": args.concurrency}
        with bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir) as server, bc.client(server) as c:
            idle_batch = bc.create_batch(c, bc.upload(c, small)["id"])
            bc.wait_status(c, idle_batch["id"], "completed", args.timeout, args.poll)
            sample(c, idle_batch["id"], 50)  # warm the connection and the route
            idle_before = sample(c, idle_batch["id"], args.idle_samples)
            batch = bc.create_batch(c, bc.upload(c, big)["id"])
            bc.wait_status(c, batch["id"], "in_progress", args.timeout, 0.01)
            with bc.profiler(args.profile, server.pid, NAME, args.profile_gil, args.profile_idle):
                busy, done_first, done_last, seconds = sample_while_running(
                    c, batch["id"], args.samples, args.max_seconds
                )
            bc.wait_status(c, batch["id"], "completed", args.timeout, args.poll)
            idle_after = sample(c, idle_batch["id"], args.idle_samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if len(busy) < 100:
        sys.exit(f"only {len(busy)} status calls while the batch ran; raise --lines")
    idle_p99 = min(percentile(idle_before, 0.99), percentile(idle_after, 0.99))
    p50, p99, worst = percentile(busy, 0.5), percentile(busy, 0.99), max(busy) * 1000
    ratio = p99 / idle_p99
    recorded = done_last - done_first
    table = [
        ("lines", f"{args.lines:,} (BATCHGATE_CONCURRENCY={args.concurrency})"),
        (
            "idle GET /v1/batches/{id}",
            f"p50 {percentile(idle_before, 0.5):.2f} / {percentile(idle_after, 0.5):.2f} ms, "
            f"p99 {percentile(idle_before, 0.99):.2f} / {percentile(idle_after, 0.99):.2f} ms (before / after)",
        ),
        ("while recording results", f"{len(busy):,} calls over {seconds:.1f} s, {recorded / seconds:,.0f} lines/s"),
        ("busy p50", f"{p50:.2f} ms"),
        ("busy p99", f"{p99:.2f} ms"),
        ("busy max", f"{worst:.1f} ms"),
        ("ratio busy p99 / idle p99", f"{ratio:.1f}"),
    ]
    result = bc.default_result(args) | {
        "idle_before_s": idle_before,
        "idle_after_s": idle_after,
        "busy_s": busy,
        "idle_p99_ms": idle_p99,
        "busy_p50_ms": p50,
        "busy_p99_ms": p99,
        "busy_max_ms": worst,
        "ratio_p99": ratio,
        "lines_per_s_while_sampled": recorded / seconds,
    }
    bc.report(NAME, args, table, result, bc.Targets())
    print(f"INFO status_p99_ratio_busy_over_idle: {ratio:.1f}")


if __name__ == "__main__":
    main()
