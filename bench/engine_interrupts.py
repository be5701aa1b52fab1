"""What interrupting batch steps costs the batch, and what it saves synchronous requests
(issue 15), on the embedded engine driven directly (no HTTP).

Two ways, interleaved round by round (on, off, on, off, ...; the load average recorded
before each): an engine with --slots slots runs a batch of --lines greedy generations of
--max-tokens tokens while one thread sends priority requests one after another (4 tokens,
--gap seconds apart) until the batch ends:
  (on)  the engine as it ships: a priority request arriving in the first half of a step
        of batch sequences alone interrupts it;
  (off) the same engine without its abort callback: every step in flight finishes.
Reported: the batch's generated tokens/s (on / off: the cost), and each way's median
time from a priority request's submission to its first token (the saving).

  .venv/bin/python bench/engine_interrupts.py [--model smollm2-135m --rounds 2 --gap 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

import batchgate.engines.local.engine as engine_module
from batchgate.engines.local.catalog import ModelCatalog
from batchgate.engines.local.engine import LlamaEngine, SamplingParams
from batchgate.settings import Settings


def one_run(path: Path, args: argparse.Namespace, interrupt: bool) -> dict[str, Any]:
    reader = engine_module._READ_FLAG
    if not interrupt:
        engine_module._READ_FLAG = None  # the context is created without the abort callback
    try:
        engine = LlamaEngine(path, slots=args.slots, ctx_per_slot=512, threads=args.threads)
    finally:
        engine_module._READ_FLAG = reader

    def tokens(question: str) -> list[int]:
        return engine.tokenize(engine.chat_prompt([{"role": "user", "content": question}]))

    quick = SamplingParams(max_tokens=4, temperature=0)
    engine.submit(tokens("Say hi."), quick).result()  # warm up
    stop, first_token = threading.Event(), []

    def time_to_first_token() -> float:
        sent, seen = time.perf_counter(), []
        on_text = lambda _: seen or seen.append(time.perf_counter() - sent)  # noqa: E731
        engine.submit(tokens("Say hi."), quick, priority=True, on_text=on_text).result()
        return seen[0]

    def interactive() -> None:
        while not stop.is_set():
            first_token.append(time_to_first_token())
            time.sleep(args.gap)

    load = bc.load1()
    started = time.perf_counter()
    long = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    batch = [engine.submit(tokens(f"Write a short story about lead number {i}."), long) for i in range(args.lines)]
    thread = threading.Thread(target=interactive)
    thread.start()
    generated = sum(f.result().completion_tokens for f in batch)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    engine.close()
    return {
        "batch_tokens_per_s": generated / elapsed,
        "first_token_p50_ms": statistics.median(first_token) * 1000,
        "sync_requests": len(first_token),
        "interrupted_steps": engine.interrupted_steps,
        "load": load,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lines", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--gap", type=float, default=0.2, help="seconds between two priority requests")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()
    path = ModelCatalog(Settings().models_dir).resolve(args.model)
    rounds = []
    for i in range(1, args.rounds + 1):
        on, off = one_run(path, args, True), one_run(path, args, False)
        rounds.append({"on": on, "off": off, "cost": on["batch_tokens_per_s"] / off["batch_tokens_per_s"]})
        for name, r in (("on", on), ("off", off)):
            print(
                f"  round {i} {name}: batch {r['batch_tokens_per_s']:.1f} tok/s, {r['sync_requests']} sync requests,"
                f" first token p50 {r['first_token_p50_ms']:.0f} ms, {r['interrupted_steps']} steps interrupted"
                f" (load {r['load']})",
                flush=True,
            )

    def spread(way: str, key: str, digits: int = 1) -> str:
        return bc.min_median([r[way][key] for r in rounds], digits)

    table = [
        ("engine", f"{args.model}, {args.slots} slots, {args.threads} threads"),
        (
            "batch",
            f"{args.lines} greedy lines of up to {args.max_tokens} tokens; {args.rounds} rounds, on/off interleaved",
        ),
        ("sync requests", f"4 tokens each, one after another, {args.gap} s apart, while the batch runs"),
        ("batch tokens/s, interrupting (on)", spread("on", "batch_tokens_per_s")),
        ("batch tokens/s, not interrupting (off)", spread("off", "batch_tokens_per_s")),
        ("batch throughput on / off", bc.min_median([r["cost"] for r in rounds], 3)),
        ("sync first token p50, on", spread("on", "first_token_p50_ms", 0) + " ms"),
        ("sync first token p50, off", spread("off", "first_token_p50_ms", 0) + " ms"),
        ("steps interrupted per run (on)", spread("on", "interrupted_steps", 0)),
    ]
    bc.report("engine_interrupts", args, table, bc.default_result(args) | {"rounds": rounds}, bc.Targets())


if __name__ == "__main__":
    main()
