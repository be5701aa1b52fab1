"""Interactive latency on the embedded engine under batch load (issue 15): the time to the
first token of streamed synchronous chat completions while a batch keeps every engine
slot busy, against the same requests with the engine idle, in the same run.

One `batchgate serve` on the local engine (--model, default smollm2-135m). Each round
measures idle (--requests sequential streamed requests, --max-tokens 8), then loaded
(submit a batch of --lines lines of --batch-max-tokens each, wait until its first lines
are done, the same requests, cancel the batch): the two ways interleaved round by round,
the 1-minute load average recorded before each. Time to first token = from sending the
request to its first content chunk. Target: loaded / idle time to first token <= 1.5
(median over rounds of each round's median); p99 reported beside it.

  .venv/bin/python bench/local_ttft.py [--rounds 3 --requests 20 --lines 400] [--record-results]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _scheduling as sch
import orjson
from _common import Targets, default_result, report

QUESTIONS = ["Name a colour.", "Say hello.", "Count to three.", "Name a fruit.", "What is 2+2?"]


def write_batch(path: Path, lines: int, model: str, max_tokens: int) -> Path:
    with open(path, "wb") as f:
        for i in range(lines):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Write a short story about lead number {i}."}],
                "max_tokens": max_tokens,
            }
            f.write(orjson.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
            f.write(b"\n")
    return path


def first_token_times(c: sch.httpx.Client, model: str, n: int, max_tokens: int) -> list[float]:
    """Seconds to the first content chunk of `n` sequential streamed requests."""
    out = []
    for i in range(n):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        started, first = time.perf_counter(), None
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if first is None and line.startswith("data: {"):
                    choices = orjson.loads(line[6:]).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        first = time.perf_counter() - started
        if first is None:
            raise RuntimeError("a streamed request produced no content")
        out.append(first)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--lines", type=int, default=400, help="lines of the batch that keeps the engine busy")
    p.add_argument("--batch-max-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=20, help="streamed sync requests per phase")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-prefix-reuse", action="store_true", help="the engine computes every prompt in full")
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-local-ttft-"))
    batch_input = write_batch(tmp / "batch.jsonl", args.lines, args.model, args.batch_max_tokens)
    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": args.model}
    if args.no_prefix_reuse:
        env["BATCHGATE_ENGINE_PREFIX_REUSE"] = "false"
    rounds: list[dict[str, float]] = []
    with sch.gateway("local-ttft", "", env=env) as gw, gw.client() as c:
        first_token_times(c, args.model, 3, args.max_tokens)  # warm up: loads the model
        slots = 8  # the engine's default BATCHGATE_ENGINE_SLOTS
        for i in range(1, args.rounds + 1):
            load_idle = sch.load1()
            idle = first_token_times(c, args.model, args.requests, args.max_tokens)
            batch = sch.submit(c, batch_input)
            sch.wait_running(c, batch["id"], done_at_least=slots)
            load_loaded = sch.load1()
            loaded = first_token_times(c, args.model, args.requests, args.max_tokens)
            running = c.get(f"/v1/batches/{batch['id']}").json()
            sch.cancel_and_wait(c, batch["id"])
            row = sch.latency_round(idle, loaded, load_idle, load_loaded)
            row["batch_done_before_cancel"] = running["request_counts"]["completed"]
            rounds.append(row)
            print(
                f"  round {i}: idle TTFT p50 {row['idle_p50_ms']:.0f} p99 {row['idle_p99_ms']:.0f} ms (load {load_idle})"
                f" | loaded p50 {row['loaded_p50_ms']:.0f} p99 {row['loaded_p99_ms']:.0f} ms (load {load_loaded})"
                f" | batch lines done {row['batch_done_before_cancel']:.0f} | p50 ratio {row['p50_ratio']:.2f}",
                flush=True,
            )

    targets = Targets()
    median_ratio = sch.min_median_max([r["p50_ratio"] for r in rounds])[1]
    targets.check(
        "local engine: time to first token under batch load / idle (median of rounds) <= 1.5",
        median_ratio,
        median_ratio <= 1.5,
    )
    table = [
        ("engine", f"local, {args.model}, 8 slots"),
        ("batch", f"{args.lines} lines of {args.batch_max_tokens} tokens, cancelled after each loaded phase"),
        ("sync requests", f"{args.requests} sequential streamed, max_tokens {args.max_tokens}, {args.rounds} rounds"),
        *sch.latency_table(rounds, "TTFT ", 0),
        ("load average before each phase", sch.load_range(rounds)),
    ]
    result = default_result(args) | {"rounds": rounds}
    report("local_ttft", args, table, result, targets)


if __name__ == "__main__":
    main()
