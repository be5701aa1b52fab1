"""How long the billing exporter's compute pass takes on a big ledger (core/billing.py):
the whole lookback (every 15 minutes and on start) against the last two closed hours
(every other pass), interleaved a, b, a, b on one SQLite database.

    .venv/bin/python bench/billing_compute.py [--rows 500000] [--projects 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from batchgate.core.billing import HOUR, RECENT_HOURS, BillingConfig, ProjectBilling, compute_events
from batchgate.store import SQLiteStore

NOW = 1_800_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000, help="ledger rows, spread over the lookback")
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = SQLiteStore(path)
        ids = [store.ensure_project(f"p{i}", NOW).id for i in range(args.projects)]
        config = BillingConfig(
            "K", {f"p{i}": ProjectBilling(f"p{i}", "cus_x", "cost", "tokens") for i in range(args.projects)}
        )
        span = config.lookback_hours * HOUR
        with sqlite3.connect(path) as conn:
            conn.executemany(
                "INSERT INTO ledger (kind, project_id, endpoint, started_at, finished_at, input_tokens, "
                "output_tokens, cost) VALUES ('sync', ?, '/v1/chat/completions', ?, ?, 10, 5, 0.00001)",
                ((ids[n % len(ids)], t, t + 1) for n in range(args.rows) for t in [NOW - span + n * span / args.rows]),
            )
        timings: dict[str, list[float]] = {"whole": [], "recent": []}
        counts = {}
        for _ in range(args.runs):
            for name, hours in (("whole", None), ("recent", RECENT_HOURS)):
                start = time.perf_counter()
                counts[name] = len(compute_events(store, config, NOW + config.settle_seconds, hours))
                timings[name].append(time.perf_counter() - start)
        store.close()
    print(
        f"{args.rows:,} ledger rows over {config.lookback_hours} h, {args.projects} projects; load average {os.getloadavg()}"
    )
    for name, values in timings.items():
        print(
            f"{name:>6}: {counts[name]} events, min {min(values) * 1000:.0f} ms, "
            f"median {statistics.median(values) * 1000:.0f} ms over {args.runs} runs"
        )
    ratio = statistics.median(timings["whole"]) / statistics.median(timings["recent"])
    print(f"whole / recent (medians): {ratio:.1f}x")


if __name__ == "__main__":
    main()
