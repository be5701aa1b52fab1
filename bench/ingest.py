"""Ingest: upload a large JSONL input and wait until the batch is validated (`in_progress`).

Measures, against a real `batchgate serve` subprocess on 127.0.0.1:
  upload      POST /v1/files, the multipart body streamed from disk by httpx
  validation  POST /v1/batches -> first GET /v1/batches/{id} that says in_progress
              (polled every 20 ms); this is the worker's validation job: parse and
              check every line, write one request row per line
  total       upload + validation
Reference, same file, same run: `for line in open(path, 'rb'): orjson.loads(line)`
(best of two runs, one before and one after the server run, so a noisy neighbour
slowing one of them does not flatter the ratio).
Server memory: psutil RSS of the server process sampled every 20 ms.

Targets: total / reference <= 4, server peak RSS <= 300 MB.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

NAME = "ingest"
RATIO_TARGET = 4.0
RSS_TARGET_MB = 300.0


def reference(path: Path) -> float:
    loads = orjson.loads
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            loads(line)
    return time.perf_counter() - t0


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 1_000_000)
    parser.add_argument("--line-bytes", type=int, default=200, help="approximate bytes per input line")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-input-", dir=args.tmp_dir))
    try:
        path = work / "input.jsonl"
        t = time.perf_counter()
        size = bc.write_input(path, args.lines, args.line_bytes)
        print(f"generated {args.lines:,} lines, {bc.mb(size)} ({size / args.lines:.0f} B/line) "
              f"in {time.perf_counter() - t:.1f} s")  # fmt: skip

        ref_before = reference(path)
        print(f"reference (orjson.loads loop): {ref_before:.2f} s")
        with bc.run_server(NAME, tmp_dir=args.tmp_dir) as server, bc.client(server) as c:
            rss_idle = server.rss.at(time.perf_counter())
            with bc.profiler(args.profile, server.pid, NAME):
                t0 = time.perf_counter()
                file_obj = bc.upload(c, path)
                t1 = time.perf_counter()
                print(f"uploaded {file_obj['id']} ({file_obj['bytes']:,} bytes) in {t1 - t0:.2f} s")
                batch = bc.create_batch(c, file_obj["id"])
                batch, seen = bc.wait_status(c, batch["id"], "in_progress", args.timeout, args.poll)
                t2 = seen["in_progress"]
            total_lines = batch["request_counts"]["total"]
            if total_lines != args.lines:
                raise RuntimeError(f"server counted {total_lines} lines, expected {args.lines}")
            rss_upload = server.rss.peak(t0, t1)
            rss_peak = server.rss.peak(t0, t2)
            rss_end = server.rss.at(t2)
        ref_after = reference(path)
        print(f"reference again: {ref_after:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref = min(ref_before, ref_after)
    upload_s, validation_s, total_s = t1 - t0, t2 - t1, t2 - t0
    ratio = total_s / ref
    table = [
        ("lines", f"{args.lines:,} ({size / args.lines:.0f} B/line, {bc.mb(size)})"),
        ("reference orjson.loads loop", f"{ref:.2f} s (runs: {ref_before:.2f}, {ref_after:.2f})"),
        ("upload", f"{upload_s:.2f} s ({size / upload_s / bc.MB:.0f} MB/s)"),
        ("validation (create -> in_progress)", f"{validation_s:.2f} s ({args.lines / validation_s:,.0f} lines/s)"),
        ("total", f"{total_s:.2f} s"),
        ("ratio total/reference", f"{ratio:.2f}x (upload {upload_s / ref:.2f}x + validation {validation_s / ref:.2f}x)"),
        ("GET /v1/batches/{id} during validation", bc.latency_summary(seen["_poll_latencies"])),
        ("server RSS idle -> end", f"{bc.mb(rss_idle)} -> {bc.mb(rss_end)}"),
        ("server peak RSS (upload / whole run)", f"{bc.mb(rss_upload)} / {bc.mb(rss_peak)}"),
    ]
    result = bc.default_result(args) | {
        "lines": args.lines,
        "bytes": size,
        "reference_s": ref,
        "reference_runs_s": [ref_before, ref_after],
        "upload_s": upload_s,
        "validation_s": validation_s,
        "total_s": total_s,
        "ratio_total_over_reference": ratio,
        "poll_interval_s": args.poll,
        "poll_latencies_s": seen["_poll_latencies"],
        "server_rss_idle_bytes": rss_idle,
        "server_rss_peak_upload_bytes": rss_upload,
        "server_rss_peak_bytes": rss_peak,
        "server_rss_end_bytes": rss_end,
    }
    targets = bc.Targets()
    targets.check(f"ingest_ratio<={RATIO_TARGET:g}", ratio, ratio <= RATIO_TARGET)
    targets.check(f"ingest_peak_rss_mb<={RSS_TARGET_MB:g}", rss_peak / bc.MB, rss_peak / bc.MB <= RSS_TARGET_MB)
    bc.report(NAME, args, table, result, targets)


if __name__ == "__main__":
    main()
