"""Dispatch against the physical limit (issue 15): batchgate's lines/s to the fast mock
upstream as a ratio of a raw aiohttp + asyncio.gather loop.

Two ways over the same --lines chat lines (default 20,000, ~200 bytes, "model":
"mock-model") against the same bench/mock_upstream.py on 127.0.0.1, interleaved in rounds
(a, r, a, r, ...; see bench/_common.interleave):

  (a) batchgate: a real `batchgate serve` (in-process worker, BATCHGATE_CONCURRENCY and
      the upstream's max_concurrency = --concurrency) routing mock-model to the mock. The
      JSONL is uploaded first (not timed), then timed from `POST /v1/batches` to the
      batch reading `completed` (validation, dispatch, recording, the output file).
      One server for every round (a long-running server, as in production).
  (r) reference: what a user could write with nothing but aiohttp: read and parse the
      JSONL, one aiohttp.ClientSession (TCPConnector limit = --concurrency),
      asyncio.gather over every line under an asyncio.Semaphore(--concurrency), the same
      request bodies POSTed, each response parsed (orjson) and one result line per request
      written (`{id, custom_id, response: {status_code, request_id, body}, error}`, the
      shape of batchgate's output lines); asyncio.run's default loop (the worker's too).
      Timed from reading the input to the last line written.

Goal: (a) / (r) >= 0.8, min and median over the kept rounds. A round whose reference ran
below --collapse x its best is discarded and repeated. Every way checks that the mock
served exactly one chat request per line.

  .venv/bin/python bench/dispatch_raw.py [--lines 20000] [--rounds 5] [--record-results]
  .venv/bin/python bench/dispatch_raw.py --profile-round   # and py-spy one extra batchgate run
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc
from dispatch import CHAT, routing_config, write_lines
from mock_upstream import MockUpstream, run_mock

NAME = "dispatch_raw"
TARGET = 0.8


async def raw_loop(url: str, src: Path, dst: Path, concurrency: int) -> int:
    """The reference: returns the lines written."""
    with open(src, "rb") as f:
        lines = [orjson.loads(line) for line in f]
    headers = {"Content-Type": "application/json"}
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    written, failed = 0, 0
    async with aiohttp.ClientSession(connector=connector) as session:
        with open(dst, "wb") as out:

            async def one(i: int, line: dict[str, Any]) -> None:
                nonlocal written, failed
                async with sem, session.post(url, data=orjson.dumps(line["body"]), headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
                body = orjson.loads(raw)
                if status != 200:
                    failed += 1
                row = {
                    "id": f"batch_req_{i:08d}",
                    "custom_id": line["custom_id"],
                    "response": {"status_code": status, "request_id": f"req_{i:08d}", "body": body},
                    "error": None,
                }
                out.write(orjson.dumps(row) + b"\n")
                written += 1

            await asyncio.gather(*(one(i, line) for i, line in enumerate(lines)))
    if failed:
        raise RuntimeError(f"raw loop: {failed} requests were not answered 200")
    return written


class Ways:
    def __init__(self, src: Path, work: Path, n: int, conc: int, mock: MockUpstream, server: bc.Server, args: Any):
        self.src, self.work, self.n, self.conc, self.mock, self.server, self.args = (
            src,
            work,
            n,
            conc,
            mock,
            server,
            args,
        )

    def served(self) -> int:
        return self.mock.stats()[CHAT]

    def reference(self) -> tuple[float, dict[str, Any]]:
        dst = self.work / "raw-output.jsonl"
        before, mock_cpu = self.served(), self.mock.cpu_seconds()
        t0, cpu0 = time.perf_counter(), time.process_time()
        written = asyncio.run(raw_loop(self.mock.base_url + "/chat/completions", self.src, dst, self.conc))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        mock_cpu = self.mock.cpu_seconds() - mock_cpu
        dst.unlink()
        served = self.served() - before
        if written != self.n or served != self.n:
            raise RuntimeError(f"raw loop: {written} lines written, {served} served; expected {self.n}")
        return self.n / elapsed, {
            "seconds": elapsed,
            "cpu_us_per_line": 1e6 * cpu / self.n,
            "mock_cpu_us_per_line": 1e6 * mock_cpu / self.n,
        }

    def batchgate(self) -> tuple[float, dict[str, Any]]:
        before = self.served()
        with bc.client(self.server) as c:
            file_id = bc.upload(c, self.src)["id"]
            time.sleep(0.05)  # a CPU sample after the upload
            mock_cpu = self.mock.cpu_seconds()
            t0 = time.perf_counter()
            batch = bc.create_batch(c, file_id)
            batch, seen = bc.wait_status(c, batch["id"], "completed", self.args.timeout, self.args.poll)
        counts, served = batch["request_counts"], self.served() - before
        if counts["completed"] != self.n or counts["failed"] or served != self.n:
            raise RuntimeError(f"batchgate: request_counts {counts}, {served} served; expected {self.n}")
        elapsed = seen["completed"] - t0
        mock_cpu = self.mock.cpu_seconds() - mock_cpu
        time.sleep(0.05)  # one more CPU sample after the end
        cores = self.server.rss.cpu_cores(t0, seen["completed"])
        return self.n / elapsed, {
            "cpu_us_per_line": 1e6 * cores * elapsed / self.n,
            "mock_cpu_us_per_line": 1e6 * mock_cpu / self.n,
            "seconds": elapsed,
            "validate_s": seen["in_progress"] - t0,
            "run_s": seen["finalizing"] - seen["in_progress"],
            "finalize_s": seen["completed"] - seen["finalizing"],
            "server_cores": round(cores, 2),
        }


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 20_000)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight, both ways (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="kept rounds (default 5)")
    parser.add_argument("--collapse", type=float, default=0.6, help="discard a round below this x the best reference")
    parser.add_argument("--profile-round", action="store_true", help="py-spy one extra batchgate run after the rounds")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="also run the batchgate source tree at this path (e.g. a checkout of an earlier commit) as a third way",
    )
    args = parser.parse_args()
    n, conc = args.lines, args.concurrency
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-dispatch-raw-", dir=args.tmp_dir))
    try:
        src = work / "input.jsonl"
        size = write_lines(src, n)
        print(f"generated {n:,} lines, {bc.mb(size)}; load average {bc.load1()}")
        with run_mock(f"{NAME}-mock") as mock:
            config = work / "batchgate.toml"
            routing_config(config, mock, conc)
            env = {"BATCHGATE_CONFIG": str(config), "BATCHGATE_CONCURRENCY": conc}
            with contextlib.ExitStack() as stack:
                server = stack.enter_context(bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir))
                ways = Ways(src, work, n, conc, mock, server, args)
                # warm-up, not counted: the server's connections, the job process, the mock
                print("warm-up:", f"{ways.batchgate()[0]:,.0f}", f"{ways.reference()[0]:,.0f} lines/s")
                measured = {"batchgate": ways.batchgate, "raw": ways.reference}
                if args.baseline_tree is not None:
                    base_server = stack.enter_context(
                        bc.run_server(NAME + "-baseline", env=env, tmp_dir=args.tmp_dir, root=args.baseline_tree)
                    )
                    base = Ways(src, work, n, conc, mock, base_server, args)
                    print("warm-up baseline:", f"{base.batchgate()[0]:,.0f} lines/s")
                    measured = {"batchgate": ways.batchgate, "baseline": base.batchgate, "raw": ways.reference}
                res = bc.interleave(measured, args.rounds, "raw", collapse=args.collapse)
                if args.profile_round:
                    with bc.profiler(True, server.pid, NAME, args.profile_gil, args.profile_idle):
                        rate, info = ways.batchgate()
                    print(f"profiled run: {rate:,.0f} lines/s {info}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratios = res.ratios("batchgate")
    rs = bc.stats(ratios)
    kept = res.kept()
    phases = {
        k: bc.stats([r.samples["batchgate"].extra[k] for r in kept])["median"]
        for k in ("validate_s", "run_s", "finalize_s", "server_cores")
    }
    cpu = {w: bc.stats([r.samples[w].extra["cpu_us_per_line"] for r in kept])["median"] for w in res.ways}
    mock = {w: bc.stats([r.samples[w].extra["mock_cpu_us_per_line"] for r in kept])["median"] for w in res.ways}
    table = [
        ("lines", f"{n:,} chat completions ({bc.mb(size)} input), concurrency {conc}, mock upstream on 127.0.0.1"),
        *bc.interleaved_rows(
            res,
            "lines/s",
            {
                "batchgate": "(a) batchgate, POST /v1/batches -> completed",
                "raw": "(r) raw aiohttp + gather loop, read -> last line written",
                "baseline": f"(a0) batchgate at {args.baseline_tree} (baseline), same measure as (a)",
            },
        ),
        (
            "(a) phases, median",
            f"validation {phases['validate_s']:.2f} s, dispatch {phases['run_s']:.2f} s, "
            f"output file {phases['finalize_s']:.2f} s; server + job process {phases['server_cores']:.2f} cores busy",
        ),
        (
            "CPU per line, median (a) server + job process / (r) loop process; mock",
            f"{cpu['batchgate']:.0f} / {cpu['raw']:.0f} us; mock {mock['batchgate']:.0f} / {mock['raw']:.0f} us "
            "(less noisy than wall time on a loaded machine: the ratio (r)/(a) of the totals is "
            f"{(cpu['raw'] + mock['raw']) / (cpu['batchgate'] + mock['batchgate']):.2f})",
        ),
    ]
    result = bc.default_result(args) | {
        "lines": n,
        "concurrency": conc,
        "interleaved": res.as_json(),
        "ratio": rs,
    }
    targets = bc.Targets()
    targets.check(f"dispatch_vs_raw_aiohttp_median>={TARGET:g}", rs["median"], rs["median"] >= TARGET)
    targets.check(f"dispatch_vs_raw_aiohttp_min>={TARGET:g}", rs["min"], rs["min"] >= TARGET)
    bc.report(NAME, args, table, result, targets)


if __name__ == "__main__":
    main()
