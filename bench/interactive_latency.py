"""Interactive latency under batch load (issue 15): synchronous chat completions through
the gateway while a 20,000-line batch saturates the same upstream, against the same
requests with the upstream idle, in the same run.

The upstream is bench/mock_upstream.py serving C requests at a time (--latency-ms each;
the rest queue there, as a GPU server's slots do); the gateway's upstream has
max_concurrency C. Each round measures idle (sequential sync requests), then loaded
(submit the batch, wait until it runs, the same sync requests, cancel the batch): the two
ways interleaved round by round, the 1-minute load average recorded before each.
Target: p99 loaded <= 1.5 x p99 idle (median over rounds).

  .venv/bin/python bench/interactive_latency.py [--concurrency 8 --latency-ms 50 --lines 20000 --requests 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _scheduling as sch
from _common import Targets, default_result, report
from mock_upstream import run_mock


def sync_latencies(c: sch.httpx.Client, n: int) -> list[float]:
    body = {"model": sch.MODEL, "messages": [{"role": "user", "content": "how are you"}], "max_tokens": 4}
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = c.post("/v1/chat/completions", json=body)
        out.append(time.perf_counter() - t)
        r.raise_for_status()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=8, help="requests the mock upstream serves at a time (C)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="the mock's time per request")
    p.add_argument("--lines", type=int, default=20_000, help="lines of the batch that saturates the upstream")
    p.add_argument("--requests", type=int, default=100, help="sync requests per phase")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-interactive-"))
    batch_input = sch.input_file(args.lines, tmp)
    capacity = args.concurrency / (args.latency_ms / 1000)  # lines/s the upstream can serve
    rounds: list[dict[str, float]] = []
    extra = ("--max-concurrent", str(args.concurrency))
    with run_mock("interactive-mock", latency_ms=args.latency_ms, extra_args=extra) as mock:
        config = sch.upstream_config(mock.base_url, args.concurrency)
        with sch.gateway("interactive", config) as gw, gw.client() as c:
            sync_latencies(c, 10)  # warm up: connections, first-call paths
            for i in range(1, args.rounds + 1):
                load_idle = sch.load1()
                idle = sync_latencies(c, args.requests)
                batch = sch.submit(c, batch_input)
                sch.wait_running(c, batch["id"], done_at_least=4 * args.concurrency)
                served0, t0 = mock.stats()["/v1/chat/completions"], time.perf_counter()
                load_loaded = sch.load1()
                loaded = sync_latencies(c, args.requests)
                served = mock.stats()["/v1/chat/completions"] - served0 - args.requests
                upstream_rate = served / (time.perf_counter() - t0)
                running = c.get(f"/v1/batches/{batch['id']}").json()
                sch.cancel_and_wait(c, batch["id"])
                row = sch.latency_round(idle, loaded, load_idle, load_loaded)
                row["batch_lines_per_s_during"] = upstream_rate
                row["batch_done_before_cancel"] = running["request_counts"]["completed"]
                rounds.append(row)
                print(
                    f"  round {i}: idle p50 {row['idle_p50_ms']:.1f} p99 {row['idle_p99_ms']:.1f} ms (load {load_idle})"
                    f" | loaded p50 {row['loaded_p50_ms']:.1f} p99 {row['loaded_p99_ms']:.1f} ms (load {load_loaded})"
                    f" | batch {upstream_rate:.0f} lines/s of {capacity:.0f} | p99 ratio {row['p99_ratio']:.2f}",
                    flush=True,
                )

    targets = Targets()
    median_ratio = sch.min_median_max([r["p99_ratio"] for r in rounds])[1]
    targets.check(
        "interactive p99 under batch load / idle p99 (median of rounds) <= 1.5", median_ratio, median_ratio <= 1.5
    )
    table = [
        ("upstream", f"mock, {args.concurrency} at a time, {args.latency_ms:g} ms each ({capacity:.0f} lines/s)"),
        ("batch", f"{args.lines:,} lines, cancelled after each loaded phase"),
        ("sync requests", f"{args.requests} sequential per phase, {args.rounds} rounds (idle, loaded interleaved)"),
        *sch.latency_table(rounds, "", 1),
        ("batch lines/s during loaded phase", sch.mmm([r["batch_lines_per_s_during"] for r in rounds], 0)),
        ("load average before each phase", sch.load_range(rounds)),
    ]
    result = default_result(args) | {"rounds": rounds}
    report("interactive_latency", args, table, result, targets)


if __name__ == "__main__":
    main()
