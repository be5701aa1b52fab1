"""What a budget check costs (issue 12): a key's spend this period on SQLite with N ledger
rows of that key, first read (the period's index-only sum) and later reads (only the rows
added since, an index range on ledger_by_key). Reference in the same run: the full sum
`store.key_spend(key, since)` that every read would cost without the incremental reads.

    .venv/bin/python bench/budget_spend.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from batchgate.core.budgets import Budgets
from batchgate.core.ledger import SYNC, LedgerEntry
from batchgate.core.models import ApiKey
from batchgate.store import SQLiteStore, ledger_sql
from batchgate.testing import FakeClock

MONTH = 1_764_547_200.0  # 2025-12-01T00:00Z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    start = MONTH + 3600
    with tempfile.TemporaryDirectory() as home:
        store = SQLiteStore(Path(home) / "bench.db")
        rows = [
            ledger_sql.entry_params(
                LedgerEntry(
                    SYNC, "p", "/v1/chat/completions", start + i * 0.001, start + i * 0.001, "key_a", cost=0.001
                )
            )
            for i in range(args.rows)
        ]
        with store._write() as conn:
            conn.executemany(ledger_sql.insert_sql("?"), rows)
        key = ApiKey("key_a", "p", "", "", 0, budget_usd=1e9, budget_period="month")
        clock = FakeClock(start + args.rows * 0.001 + 1)
        budgets = Budgets(store, clock, cache_seconds=0)
        t = time.perf_counter()
        budgets.check(key)
        first = time.perf_counter() - t
        later, full = [], []
        for _ in range(args.reads):
            now = clock.time()
            store.add_ledger_entry(LedgerEntry(SYNC, "p", "/v1/chat/completions", now, now, "key_a", cost=0.001))
            t = time.perf_counter()
            budgets.check(key)
            later.append(time.perf_counter() - t)
            if len(full) < 7:
                t = time.perf_counter()
                store.key_spend("key_a", MONTH)
                full.append(time.perf_counter() - t)
        assert abs(budgets.status(key).spent_usd - store.key_spend("key_a", None)) < 1e-6
        later.sort()
        full.sort()
        p99 = later[min(len(later) - 1, int(len(later) * 0.99))]
        print(
            f"rows={args.rows}: first read {first * 1000:.1f} ms; later reads ({args.reads}, 1 new row each) "
            f"median {later[len(later) // 2] * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms; "
            f"reference full sum median {full[len(full) // 2] * 1000:.1f} ms "
            f"(ratio {full[len(full) // 2] / later[len(later) // 2]:.0f}x); load average {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
