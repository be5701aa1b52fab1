"""Adaptive concurrency (issue 15): a batch against a mock upstream that answers 429 to
any request arriving while N are in service, through a gateway configured far above N
(max_concurrency 64: it must find N itself), against the ideal N / latency and against
a gateway configured at exactly N (the reference), in the same run.

Each round starts fresh gateways (the adaptive one learns from its max every time) and
runs the batch on each, interleaved. Goodput = lines / (first poll seeing in_progress ->
first poll seeing it finished). Targets: adaptive goodput >= 90% of N / latency, and
zero failed lines.

  .venv/bin/python bench/adaptive.py [--n 8 --latency-ms 50 --lines 3000 --max-concurrency 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _scheduling as sch
from _common import Targets, default_result, report
from mock_upstream import MockUpstream, run_mock


def run_batch(mock: MockUpstream, max_concurrency: int, path: Path, lines: int, name: str) -> dict[str, Any]:
    rejected0 = int(mock.raw_stats().get("rejected", 0))
    with sch.gateway(name, sch.upstream_config(mock.base_url, max_concurrency)) as gw, gw.client() as c:
        load = sch.load1()
        batch = sch.submit(c, path)
        started = None
        while True:
            now = c.get(f"/v1/batches/{batch['id']}").json()
            t = time.perf_counter()
            if now["status"] == "in_progress" and started is None:
                started = t
            if now["status"] in ("finalizing", "completed", "failed", "expired", "cancelled"):
                break
            time.sleep(0.02)
        final = sch.wait_done(c, batch["id"], timeout=600)
        limit = c.get("/v1/admin/scheduling").json()["upstreams"][0]["limit"]
    assert started is not None
    counts = final["request_counts"]
    return {
        "goodput": counts["completed"] / (t - started),
        "completed": counts["completed"],
        "failed": counts["failed"],
        "rejected": int(mock.raw_stats().get("rejected", 0)) - rejected0,
        "limit_at_end": limit,
        "load": load,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="the mock answers 429 while this many are in service")
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--lines", type=int, default=3000)
    p.add_argument("--max-concurrency", type=int, default=64, help="the adaptive gateway's configured maximum")
    p.add_argument("--retry-after", help="Retry-After of the mock's 429s (default: none)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-adaptive-"))
    path = sch.input_file(args.lines, tmp)
    ideal = args.n / (args.latency_ms / 1000)
    rounds: list[dict[str, Any]] = []
    extra = ("--reject-above", str(args.n), *(("--retry-after", args.retry_after) if args.retry_after else ()))
    with run_mock("adaptive-mock", latency_ms=args.latency_ms, extra_args=extra) as mock:
        for i in range(1, args.rounds + 1):
            adaptive = run_batch(mock, args.max_concurrency, path, args.lines, "adaptive")
            exact = run_batch(mock, args.n, path, args.lines, "adaptive-exact")
            row = {"adaptive": adaptive, "exact": exact, "of_ideal": adaptive["goodput"] / ideal}
            row["of_exact"] = adaptive["goodput"] / exact["goodput"]
            rounds.append(row)
            print(
                f"  round {i}: adaptive {adaptive['goodput']:.0f} lines/s ({row['of_ideal']:.0%} of {ideal:.0f}; "
                f"{adaptive['rejected']} 429s, {adaptive['failed']} failed, limit {adaptive['limit_at_end']} at the end; "
                f"load {adaptive['load']}) | configured at N: {exact['goodput']:.0f} lines/s ({exact['rejected']} 429s; "
                f"load {exact['load']}) | adaptive/exact {row['of_exact']:.2f}",
                flush=True,
            )

    targets = Targets()
    of_ideal = [r["of_ideal"] for r in rounds]
    failed = sum(r["adaptive"]["failed"] for r in rounds)
    median = sch.min_median_max(of_ideal)[1]
    targets.check("adaptive goodput / (N / latency) (median of rounds) >= 0.9", median, median >= 0.9)
    targets.check("failed lines (all rounds) == 0", failed, failed == 0)
    loads = [r[w]["load"] for r in rounds for w in ("adaptive", "exact")]
    table = [
        ("upstream", f"mock answering 429 while {args.n} are in service, {args.latency_ms:g} ms each"),
        ("ideal goodput N/latency", f"{ideal:.0f} lines/s"),
        ("batch", f"{args.lines:,} lines; gateway max_concurrency {args.max_concurrency} (adaptive) vs {args.n}"),
        ("adaptive goodput", sch.mmm([r["adaptive"]["goodput"] for r in rounds], 0, " lines/s")),
        ("configured-at-N goodput", sch.mmm([r["exact"]["goodput"] for r in rounds], 0, " lines/s")),
        ("adaptive / ideal", sch.mmm(of_ideal)),
        ("adaptive / configured at N", sch.mmm([r["of_exact"] for r in rounds])),
        ("429s answered per adaptive run", sch.mmm([r["adaptive"]["rejected"] for r in rounds], 0)),
        ("failed lines (adaptive, all rounds)", str(failed)),
        ("adaptive limit at the end", ", ".join(str(r["adaptive"]["limit_at_end"]) for r in rounds)),
        ("load average before each run", f"{min(loads)}–{max(loads)}"),
    ]
    result = default_result(args) | {"rounds": rounds}
    report("adaptive", args, table, result, targets)


if __name__ == "__main__":
    main()
