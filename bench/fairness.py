"""Fairness (issue 15): project B's 10-line batch submitted while project A's 100,000-line
batch runs on the same upstream, against B's batch alone, in the same run.

The upstream is bench/mock_upstream.py serving C requests at a time (--latency-ms each);
the gateway (auth on, one key per project) has that upstream at max_concurrency C and its
default worker (64 lines in flight). Each round: B alone (upload to completed, polled
every 20 ms), then A submitted and running, B again, A cancelled. Target: B during A
<= 2 x B alone (median over rounds).

  .venv/bin/python bench/fairness.py [--a-lines 100000 --b-lines 10 --concurrency 16 --latency-ms 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _scheduling as sch
from _common import Targets, default_result, report
from mock_upstream import run_mock


def b_batch(c: sch.httpx.Client, path: Path) -> tuple[float, dict[str, int]]:
    t = time.perf_counter()
    batch = sch.submit(c, path)
    done = sch.wait_done(c, batch["id"], timeout=600)
    if done["status"] != "completed" or done["request_counts"]["failed"]:
        raise RuntimeError(f"B's batch ended {done['status']}: {done['request_counts']}")
    return time.perf_counter() - t, done["request_counts"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a-lines", type=int, default=100_000)
    p.add_argument("--b-lines", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=16, help="requests the mock upstream serves at a time")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    a_input, b_input = sch.input_file(args.a_lines, tmp, "a"), sch.input_file(args.b_lines, tmp, "b")
    rounds: list[dict[str, float]] = []
    extra = ("--max-concurrent", str(args.concurrency))
    with run_mock("fairness-mock", latency_ms=args.latency_ms, extra_args=extra) as mock:
        config = sch.upstream_config(mock.base_url, args.concurrency)
        with sch.gateway("fairness", config, projects=("A", "B")) as gw, gw.client("A") as ca, gw.client("B") as cb:
            b_batch(cb, b_input)  # warm up
            for i in range(1, args.rounds + 1):
                load_alone = sch.load1()
                alone, _ = b_batch(cb, b_input)
                a = sch.submit(ca, a_input)
                sch.wait_running(ca, a["id"], done_at_least=8 * args.concurrency)
                served0 = mock.stats()["/v1/chat/completions"]
                load_loaded = sch.load1()
                t0 = time.perf_counter()
                during, _ = b_batch(cb, b_input)
                a_rate = (mock.stats()["/v1/chat/completions"] - served0 - args.b_lines) / (time.perf_counter() - t0)
                a_now = ca.get(f"/v1/batches/{a['id']}").json()
                sch.cancel_and_wait(ca, a["id"])
                row = {
                    "b_alone_s": alone,
                    "b_during_a_s": during,
                    "ratio": during / alone,
                    "a_lines_per_s_during": a_rate,
                    "a_done_before_cancel": a_now["request_counts"]["completed"],
                    "a_total": a_now["request_counts"]["total"],
                    "load_alone": load_alone,
                    "load_loaded": load_loaded,
                }
                rounds.append(row)
                print(
                    f"  round {i}: B alone {alone:.2f} s (load {load_alone}) | B during A {during:.2f} s "
                    f"(load {load_loaded}; A at {a_rate:.0f} lines/s, {row['a_done_before_cancel']:,} of "
                    f"{row['a_total']:,} done) | ratio {row['ratio']:.2f}",
                    flush=True,
                )

    def col(name: str) -> list[float]:
        return [r[name] for r in rounds]

    targets = Targets()
    median_ratio = sch.min_median_max(col("ratio"))[1]
    targets.check("B's batch during A's / alone (median of rounds) <= 2", median_ratio, median_ratio <= 2.0)
    capacity = args.concurrency / (args.latency_ms / 1000)
    loads = col("load_alone") + col("load_loaded")
    table = [
        ("upstream", f"mock, {args.concurrency} at a time, {args.latency_ms:g} ms each ({capacity:.0f} lines/s)"),
        ("A", f"project A, {args.a_lines:,} lines (cancelled after B finished, each round)"),
        ("B", f"project B, {args.b_lines} lines; upload to completed, polled every 20 ms"),
        ("B alone", sch.mmm(col("b_alone_s"), 2, " s")),
        ("B during A", sch.mmm(col("b_during_a_s"), 2, " s")),
        ("ratio during/alone", sch.mmm(col("ratio"))),
        ("A lines/s while B ran", sch.mmm(col("a_lines_per_s_during"), 0)),
        ("load average before each phase", f"{min(loads)}–{max(loads)}"),
    ]
    result = default_result(args) | {"rounds": rounds}
    report("fairness", args, table, result, targets)


if __name__ == "__main__":
    main()
