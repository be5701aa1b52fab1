"""Claim + complete on PostgreSQL: batchgate's store against pgqueuer's own benchmark,
on the same PostgreSQL server, interleaved in one run (issue 16).

    a. pgqueuer's `tools/benchmark.py --strategy drain --jobs N` (its defaults otherwise:
       asyncpg driver, 5 dequeue tasks of 10 jobs each), from a pgqueuer checkout run
       in its own virtualenv: N jobs queued, then dequeued and completed; its `rate`.
    b. batchgate's store, one process: `claim_throughput.run` on a fresh database, N
       lines claimed (256 per claim) and recorded as results (every line's result row,
       usage and ledger entry written), lines/s.

Rounds alternate a, b, a, b...; each side's median and min over rounds, and the ratio
of medians. pgqueuer is not a dependency of batchgate: set it up beside the project,

    git clone https://github.com/janbjorge/pgqueuer /tmp/pgqsrc
    python3 -m venv /tmp/pgqvenv && /tmp/pgqvenv/bin/pip install '/tmp/pgqsrc[asyncpg,psycopg]' tqdm

then `.venv/bin/python bench/pgqueuer_compare.py --pgqueuer /tmp/pgqsrc --python /tmp/pgqvenv/bin/python`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import claim_throughput as ct


def pgqueuer_rate(src: Path, python: str, admin_url: str, jobs: int) -> float:
    """jobs/s of pgqueuer's drain benchmark on a fresh database with its schema."""
    name = f"bg_pgq_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    env = os.environ | {"PGHOST": str(info.get("host", "127.0.0.1")), "PGPORT": str(info.get("port", 5432)),
                        "PGUSER": str(info.get("user", "postgres")), "PGDATABASE": name}  # fmt: skip
    try:
        pgq = str(Path(python).parent / "pgq")
        subprocess.run([pgq, "install"], env=env, check=True, capture_output=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [python, "tools/benchmark.py", "--strategy", "drain", "--jobs", str(jobs), "--output-json", out.name]
            subprocess.run(cmd, cwd=src, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return float(orjson.loads(Path(out.name).read_bytes())["rate"])
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def batchgate_rate(admin_url: str, lines: int) -> float:
    name, url = ct.new_postgres_database(admin_url)
    try:
        return ct.run(url, 1, lines)
    finally:
        ct.drop_postgres_database(admin_url, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pgqueuer", type=Path, required=True, help="a pgqueuer source checkout (its tools/benchmark.py)")
    p.add_argument("--python", required=True, help="the python of a virtualenv with pgqueuer installed")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="an admin connection")
    p.add_argument("--jobs", type=int, default=20_000, help="jobs (lines) per side per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    pgq: list[float] = []
    ours: list[float] = []
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        pgq.append(pgqueuer_rate(args.pgqueuer, args.python, args.pg, args.jobs))
        ours.append(batchgate_rate(args.pg, args.jobs))
        print(f"round {r + 1} (load {load:.1f}): pgqueuer {pgq[-1]:,.0f} jobs/s, batchgate {ours[-1]:,.0f} lines/s")
    a, b = statistics.median(pgq), statistics.median(ours)
    print(f"pgqueuer drain: median {a:,.0f} jobs/s (min {min(pgq):,.0f})")
    print(f"batchgate claim + record, 1 process: median {b:,.0f} lines/s (min {min(ours):,.0f})")
    print(f"ratio of medians batchgate / pgqueuer: {b / a:.1f}x (target >= 1.0: {'PASS' if b >= a else 'MISS'})")


if __name__ == "__main__":
    main()
