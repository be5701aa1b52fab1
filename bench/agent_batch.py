"""Agent batches vs a hand-rolled asyncio.gather loop: N leads scored by one agent.

    .venv/bin/python bench/agent_batch.py --lines 1000 --model qwen2.5-1.5b [--record-results]

The same server (local engine) and the same leads, agent and model, two ways:
- batch: `POST /v1/agent/batch/completions` in chunks of `--chunk-size` (500), submitted
  async through the SDK's `run_chunks` and polled until every chunk has ended;
- reference: `asyncio.gather` over `POST /v1/agent/completions`, `--concurrency` (8) in flight.
Ratio = reference wall time / batch wall time (target ≥ 1.0: the batch path is never slower).
The gateway's share of CPU: the server's CPU seconds per lead on the scripted (instant)
backend, running the same batch, over its CPU seconds per lead on the local model.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as bc
import httpx
import psutil

sys.path.insert(0, str(bc.ROOT / "examples"))
from lead_scoring import SCHEMA, SYSTEM_PROMPT, synthetic_leads, task

from batchgate import Client

NAME = "agent_batch"


def agent(model: str, max_tokens: int) -> dict[str, Any]:
    schema = {"type": "json_schema", "json_schema": {"name": "lead_score", "schema": SCHEMA}}
    return {
        "agent_name": "Lead Scorer",
        "system_prompt": SYSTEM_PROMPT,
        "model_name": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "llm_args": {"response_format": schema},
    }


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def run_batch(
    server: bc.Server, records: list[dict[str, Any]], chunk_size: int
) -> tuple[float, float, int, dict[str, float]]:
    """(wall seconds, server CPU seconds, records answered successfully, usage and cost summed
    over the batch's results: what the README's cost table reports per lead)"""
    manifest = Path(tempfile.mkdtemp()) / "manifest.json"
    cpu, start = cpu_seconds(server.pid), time.perf_counter()
    ok = 0
    usage = {"input_tokens": 0.0, "output_tokens": 0.0, "cost": 0.0}
    with Client(base_url=server.base_url, timeout=120) as client:
        for _, batch in client.agent.batch.completions.run_chunks(
            records, chunk_size=chunk_size, manifest=manifest, poll_interval=0.2
        ):
            ok += sum(r.success for r in batch.results)
            for r in batch.results:
                usage["input_tokens"] += r.usage.input_tokens
                usage["output_tokens"] += r.usage.output_tokens
                usage["cost"] += r.cost
    return time.perf_counter() - start, cpu_seconds(server.pid) - cpu, ok, usage


def run_gather(server: bc.Server, records: list[dict[str, Any]], concurrency: int) -> tuple[float, float, int]:
    async def main() -> int:
        slots = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=600, limits=limits) as http:

            async def one(record: dict[str, Any]) -> bool:
                async with slots:
                    r = await http.post("/v1/agent/completions", json=record)
                    return r.status_code == 200 and bool(r.json()["success"])

            return sum(await asyncio.gather(*(one(r) for r in records)))

    cpu, start = cpu_seconds(server.pid), time.perf_counter()
    ok = asyncio.run(main())
    return time.perf_counter() - start, cpu_seconds(server.pid) - cpu, ok


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 1000)
    parser.add_argument("--model", default="qwen2.5-1.5b")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight in the hand-rolled loop")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BATCHGATE_ENGINE_THREADS (default: the server's, one per core); 1 is much faster on a busy machine",
    )
    args = parser.parse_args()
    records = [
        {"agent_config": agent(args.model, args.max_tokens), "task": task(lead)} for lead in synthetic_leads(args.lines)
    ]
    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": args.model}
    if args.threads is not None:
        env["BATCHGATE_ENGINE_THREADS"] = str(args.threads)
    with bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir) as server:
        run_gather(server, records[:8], args.concurrency)  # load the model, warm the grammar cache
        gather_s, gather_cpu, gather_ok = run_gather(server, records, args.concurrency)
        batch_s, batch_cpu, batch_ok, usage = run_batch(server, records, args.chunk_size)
    with bc.run_server(NAME + "-scripted", tmp_dir=args.tmp_dir) as server:
        run_batch(server, records[:50], args.chunk_size)
        _, gateway_cpu, _, _ = run_batch(server, records, args.chunk_size)
    ratio = gather_s / batch_s
    share = gateway_cpu / batch_cpu if batch_cpu else 0.0
    n = args.lines
    table = [
        ("leads, model", f"{n:,}, {args.model} (max_tokens {args.max_tokens}), chunks of {args.chunk_size}"),
        (
            "batch: wall, server CPU",
            f"{batch_s:.1f} s ({n / batch_s:.2f} leads/s), {batch_cpu:.1f} s; {batch_ok} succeeded",
        ),
        (
            f"gather at concurrency {args.concurrency}: wall, server CPU",
            f"{gather_s:.1f} s ({n / gather_s:.2f} leads/s), {gather_cpu:.1f} s; {gather_ok} succeeded",
        ),
        ("ratio gather wall / batch wall", f"{ratio:.2f}"),
        (
            "batch usage per lead",
            f"{usage['input_tokens'] / n:.0f} input + {usage['output_tokens'] / n:.0f} output tokens, "
            f"cost ${usage['cost'] / n:.6f} (${usage['cost']:.4f} in total; the route's price: the local catalog's default, batch lines at half)",
        ),
        ("gateway CPU (scripted backend, same batch)", f"{gateway_cpu:.2f} s = {share:.1%} of the batch's server CPU"),
    ]
    result = bc.default_result(args) | {
        "batch_s": batch_s,
        "gather_s": gather_s,
        "ratio": ratio,
        "batch_cpu_s": batch_cpu,
        "gather_cpu_s": gather_cpu,
        "gateway_cpu_s": gateway_cpu,
        "gateway_cpu_share": share,
        "batch_usage": usage,
        "batch_ok": batch_ok,
        "gather_ok": gather_ok,
    }
    targets = bc.Targets()
    targets.check("batch_not_slower_than_gather (ratio >= 1.0)", ratio, ratio >= 1.0)
    bc.report(NAME, args, table, result, targets)


if __name__ == "__main__":
    main()
