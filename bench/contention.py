"""Contention (extra, no target): how fast a running batch goes while another batch validates.

One `batchgate serve` subprocess on 127.0.0.1 (scripted backend, BATCHGATE_CONCURRENCY
from --concurrency). Batch A (--lines, default 300,000) is started; its completed count
is sampled over --window seconds alone, then again while batch B (--b-lines, default
1,000,000) is being validated by the same process. Prints both rates and their ratio
(1.0 = validation does not slow the running batch; 0.5 = a fair share of one GIL).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

NAME = "contention"


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 300_000)
    parser.add_argument("--b-lines", type=int, default=1_000_000, help="lines of the batch being validated")
    parser.add_argument("--window", type=float, default=2.0, help="seconds of each rate sample")
    parser.add_argument("--concurrency", type=int, default=256, help="BATCHGATE_CONCURRENCY (default 256)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-input-", dir=args.tmp_dir))
    try:
        a, b = work / "a.jsonl", work / "b.jsonl"
        bc.write_input(a, args.lines)
        bc.write_input(b, args.b_lines)
        env = {"BATCHGATE_CONCURRENCY": args.concurrency}
        with bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir) as server, bc.client(server) as c:
            file_a, file_b = bc.upload(c, a), bc.upload(c, b)
            batch_a = bc.create_batch(c, file_a["id"])
            bc.wait_status(c, batch_a["id"], "in_progress", args.timeout, args.poll)

            def rate() -> float:
                def done() -> int:
                    return c.get(f"/v1/batches/{batch_a['id']}").json()["request_counts"]["completed"]

                d0, t0 = done(), time.perf_counter()
                time.sleep(args.window)
                d1, t1 = done(), time.perf_counter()
                return (d1 - d0) / (t1 - t0)

            alone = rate()
            batch_b = bc.create_batch(c, file_b["id"])
            time.sleep(0.3)  # the worker picks the validation job up within its poll interval
            with bc.profiler(args.profile, server.pid, NAME, args.profile_gil, args.profile_idle):
                during = rate()
            b_status = c.get(f"/v1/batches/{batch_b['id']}").json()["status"]
            a_counts = c.get(f"/v1/batches/{batch_a['id']}").json()["request_counts"]
            if a_counts["completed"] >= args.lines:
                print("warning: batch A finished inside a window; raise --lines")
            if b_status != "validating":
                print(f"warning: batch B was {b_status} at the end of the window; raise --b-lines")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = during / alone
    table = [
        ("batch A (running)", f"{args.lines:,} lines, BATCHGATE_CONCURRENCY={args.concurrency}"),
        ("batch B (validating)", f"{args.b_lines:,} lines"),
        ("A alone", f"{alone:,.0f} lines/s"),
        ("A while B validates", f"{during:,.0f} lines/s"),
        ("ratio during/alone", f"{ratio:.2f}"),
    ]
    result = bc.default_result(args) | {"alone_lines_per_s": alone, "during_lines_per_s": during, "ratio": ratio}
    bc.report(NAME, args, table, result, bc.Targets())
    print(f"INFO contention_ratio_during_over_alone: {ratio:.2f}")


if __name__ == "__main__":
    main()
