"""Output: download a large batch output file, GET /v1/files/{output_file_id}/content.

A batch of --lines (default 1,000,000) lines is run to `completed` through a real
`batchgate serve` subprocess on 127.0.0.1 (scripted backend, BATCHGATE_CONCURRENCY from
--concurrency; capped by --timeout). Its output file is then downloaded --repeat times
(default 3) with httpx streaming (iter_bytes, discarded); the best time counts. Server
RSS is sampled every 20 ms: memory must stay flat during the download.

Reference, same run: a raw `orjson.dumps` loop over the same number of rows shaped like
the output lines (id, custom_id, response{status_code, request_id, body: chat
completion}, error None); rows are built in chunks of 10,000 outside the clock, only the
dumps are timed; best of two runs, before and after the server run.

Targets: download throughput / reference throughput >= 0.5 (download at least half as
fast as producing the bytes with orjson); server peak RSS during the download is
reported, with its growth over the RSS just before the download.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

NAME = "output"
RATIO_TARGET = 0.5
CHUNK = 10_000


def output_row(i: int, line_bytes: int) -> dict:
    rid = f"{i:024x}"
    return {
        "id": f"batch_req_{rid}",
        "custom_id": f"req-{i:07d}",
        "response": {
            "status_code": 200,
            "request_id": f"req_{rid}",
            "body": bc.echo_body(i, bc.input_content(i, line_bytes)),
        },
        "error": None,
    }


def reference(lines: int, line_bytes: int) -> tuple[float, int]:
    """(seconds spent in orjson.dumps, bytes produced incl. newlines) for `lines` output rows."""
    dumps = orjson.dumps
    elapsed = 0.0
    produced = 0
    for start in range(1, lines + 1, CHUNK):
        rows = [output_row(i, line_bytes) for i in range(start, min(start + CHUNK, lines + 1))]
        t0 = time.perf_counter()
        for row in rows:
            produced += len(dumps(row)) + 1
        elapsed += time.perf_counter() - t0
    return elapsed, produced


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 1_000_000)
    parser.add_argument("--concurrency", type=int, default=256, help="BATCHGATE_CONCURRENCY (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="downloads; the best one counts (default 3)")
    parser.add_argument("--line-bytes", type=int, default=200, help="approximate bytes per input line")
    parser.set_defaults(timeout=2400.0)
    args = parser.parse_args()
    n = args.lines
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-input-", dir=args.tmp_dir))
    downloads: list[tuple[float, int, int, int]] = []  # (seconds, bytes, rss before, peak rss during)
    try:
        path = work / "input.jsonl"
        size = bc.write_input(path, n, args.line_bytes)
        print(f"generated {n:,} lines, {bc.mb(size)}")
        ref_before, ref_bytes = reference(n, args.line_bytes)
        print(f"reference (orjson.dumps loop): {ref_before:.2f} s for {bc.mb(ref_bytes)}")
        env = {"BATCHGATE_CONCURRENCY": args.concurrency}
        with bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir) as server, bc.client(server) as c:
            t_start = time.perf_counter()
            file_obj = bc.upload(c, path)
            batch = bc.create_batch(c, file_obj["id"])
            print(f"batch {batch['id']} created; waiting for completed (cap {args.timeout:.0f} s)")
            batch, seen = bc.wait_status(c, batch["id"], "completed", args.timeout, max(args.poll, 0.1))
            produce_s = time.perf_counter() - t_start
            phases = {
                "upload+validation": seen["in_progress"] - t_start,
                "run (in_progress -> finalizing)": seen["finalizing"] - seen["in_progress"],
                "finalize (finalizing -> completed)": seen["completed"] - seen["finalizing"],
            }
            print(f"batch completed in {produce_s:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
            if batch["request_counts"]["completed"] != n:
                raise RuntimeError(f"unexpected request counts {batch['request_counts']}")
            rss_produce = server.rss.peak(t_start, seen["completed"])
            cpu_run = server.rss.cpu_cores(seen["in_progress"], seen["finalizing"])
            out_id = batch["output_file_id"]
            out_bytes = c.get(f"/v1/files/{out_id}").raise_for_status().json()["bytes"]
            time.sleep(1.0)  # let the worker go idle and RSS settle
            with bc.profiler(args.profile, server.pid, NAME, args.profile_gil, args.profile_idle):
                for k in range(args.repeat):
                    rss_before = server.rss.at(time.perf_counter())
                    got = 0
                    t0 = time.perf_counter()
                    with c.stream("GET", f"/v1/files/{out_id}/content") as r:
                        r.raise_for_status()
                        for chunk in r.iter_bytes():
                            got += len(chunk)
                    t1 = time.perf_counter()
                    time.sleep(0.05)  # one more RSS sample after the last byte
                    peak = server.rss.peak(t0, t1 + 0.05)
                    if got != out_bytes:
                        raise RuntimeError(f"downloaded {got} bytes, the file has {out_bytes}")
                    downloads.append((t1 - t0, got, rss_before, peak))
                    print(
                        f"download {k + 1}: {t1 - t0:.2f} s, {got / (t1 - t0) / bc.MB:.0f} MB/s, "
                        f"server RSS {bc.mb(rss_before)} -> peak {bc.mb(peak)}"
                    )
        ref_after, _ = reference(n, args.line_bytes)
        print(f"reference again: {ref_after:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref = min(ref_before, ref_after)
    ref_bps = ref_bytes / ref
    best = min(downloads)
    dl_s, dl_bytes = best[0], best[1]
    dl_bps = dl_bytes / dl_s
    ratio = dl_bps / ref_bps
    rss_before = min(d[2] for d in downloads)
    rss_peak = max(d[3] for d in downloads)
    table = [
        ("lines", f"{n:,} (output file {bc.mb(out_bytes)}, {out_bytes / n:.0f} B/line)"),
        ("producing the batch", f"{produce_s:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + ")"),
        (
            "reference orjson.dumps",
            f"{ref:.2f} s for {bc.mb(ref_bytes)} = {ref_bps / bc.MB:.0f} MB/s "
            f"(runs: {ref_before:.2f}, {ref_after:.2f})",
        ),
        (
            f"download (best of {len(downloads)})",
            f"{dl_s:.2f} s = {dl_bps / bc.MB:.0f} MB/s (runs: {', '.join(f'{d[0]:.2f}' for d in downloads)})",
        ),
        ("server while producing: peak RSS, CPU in run", f"{bc.mb(rss_produce)}, {cpu_run:.2f} cores busy"),
        ("ratio download/reference", f"{ratio:.2f}x"),
        (
            "server RSS before -> peak during download",
            f"{bc.mb(rss_before)} -> {bc.mb(rss_peak)} (+{bc.mb(rss_peak - rss_before)})",
        ),
    ]
    result = bc.default_result(args) | {
        "lines": n,
        "concurrency": args.concurrency,
        "output_bytes": out_bytes,
        "produce_s": produce_s,
        "phases_s": phases,
        "reference_s": ref,
        "reference_runs_s": [ref_before, ref_after],
        "reference_bytes": ref_bytes,
        "reference_bytes_per_s": ref_bps,
        "downloads": [{"s": d[0], "bytes": d[1], "rss_before": d[2], "rss_peak": d[3]} for d in downloads],
        "download_s": dl_s,
        "download_bytes_per_s": dl_bps,
        "ratio_download_over_reference": ratio,
        "server_rss_peak_producing_bytes": rss_produce,
        "server_cpu_cores_run": cpu_run,
        "server_rss_before_download_bytes": rss_before,
        "server_rss_peak_download_bytes": rss_peak,
    }
    targets = bc.Targets()
    targets.check(f"output_download_ratio>={RATIO_TARGET:g}", ratio, ratio >= RATIO_TARGET)
    bc.report(NAME, args, table, result, targets)
    print(f"INFO output_download_rss_growth_mb: {(rss_peak - rss_before) / bc.MB:.1f}")


if __name__ == "__main__":
    main()
