"""HTTP clients: requests/s of httpx.AsyncClient vs aiohttp.ClientSession under concurrency.

Decides which client batchgate's upstream engine (openai_compat) is built on. Both
clients send the same N chat-completion POSTs (default 20,000, ~200-byte prompts) with at
most --concurrency (default 64) in flight, to the mock upstream (bench/mock_upstream.py,
a child process on 127.0.0.1), the way the engine would use them: one long-lived client,
a connection pool as large as the concurrency, the body pre-serialized with orjson, the
response read whole and parsed with orjson, status checked. Each run is timed from the
first request to the last response, after 200 untimed warm-up requests on the same client.

Rounds alternate httpx, aiohttp, aiohttp, httpx, ... (--rounds, default 2); the best
run of each client counts. Both run on the same event loop (uvloop when importable,
as under uvicorn). The mock's CPU use is printed to show it is not the bottleneck; the
client process's CPU use shows where the time goes on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc
from mock_upstream import MockUpstream, loop_factory, run_mock

try:
    import aiohttp
except ImportError:
    sys.exit("aiohttp is required: .venv/bin/pip install aiohttp")

NAME = "http_clients"
WARMUP = 200
Sender = Callable[[bytes], Awaitable[None]]


def bodies(n: int) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "model": "mock-model",
                "messages": [{"role": "user", "content": bc.input_content(i)}],
                "max_tokens": 16,
            }
        )
        for i in range(1, n + 1)
    ]


async def drive(send: Sender, payloads: list[bytes], concurrency: int) -> float:
    """Seconds to send every payload with at most `concurrency` in flight (fixed workers, no task per request)."""
    it = iter(payloads)

    async def worker() -> None:
        for body in it:
            await send(body)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def run_httpx(url: str, payloads: list[bytes], concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as client:

        async def send(body: bytes) -> None:
            r = await client.post(url, content=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"httpx: HTTP {r.status_code}: {r.text[:200]}")
            orjson.loads(r.content)

        await drive(send, payloads[:WARMUP], concurrency)
        return await drive(send, payloads, concurrency)


async def run_aiohttp(url: str, payloads: list[bytes], concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(body: bytes) -> None:
            async with session.post(url, data=body, headers=headers) as r:
                data = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"aiohttp: HTTP {r.status}: {data[:200]!r}")
            orjson.loads(data)

        await drive(send, payloads[:WARMUP], concurrency)
        return await drive(send, payloads, concurrency)


CLIENTS = {"httpx": run_httpx, "aiohttp": run_aiohttp}


def measure(
    client: str, mock: MockUpstream, payloads: list[bytes], concurrency: int, timeout: float, uvloop: bool
) -> dict[str, float]:
    """One timed run of `client` on a fresh event loop; rate, and CPU of this process and the mock."""
    me = psutil.Process()
    url = mock.base_url + "/chat/completions"
    before = mock.stats()["/v1/chat/completions"]
    cpu_me, cpu_mock, t0 = sum(me.cpu_times()[:2]), mock.cpu_seconds(), time.perf_counter()
    coro = asyncio.wait_for(CLIENTS[client](url, payloads, concurrency), timeout)
    with asyncio.Runner(loop_factory=loop_factory() if uvloop else None) as runner:
        elapsed = runner.run(coro)
    wall = time.perf_counter() - t0  # includes the warm-up: CPU shares are over the same span
    served = mock.stats()["/v1/chat/completions"] - before
    if served != len(payloads) + WARMUP:
        raise RuntimeError(f"{client}: the mock served {served} requests, expected {len(payloads) + WARMUP}")
    return {
        "seconds": elapsed,
        "rps": len(payloads) / elapsed,
        "client_cores": (sum(me.cpu_times()[:2]) - cpu_me) / wall,
        "mock_cores": (mock.cpu_seconds() - cpu_mock) / wall,
    }


def _rates(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['rps']:,.0f}" for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="timed requests per run (default 20,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per client, alternating (default 2)")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's default event loop")
    parser.add_argument("--timeout", type=float, default=600.0, help="hard cap in seconds for each run")
    parser.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()
    uvloop = not args.no_uvloop and loop_factory() is not None
    payloads = bodies(args.requests)
    runs: dict[str, list[dict[str, float]]] = {"httpx": [], "aiohttp": []}
    order = [c for r in range(args.rounds) for c in (("httpx", "aiohttp") if r % 2 == 0 else ("aiohttp", "httpx"))]
    with run_mock(NAME + "-mock") as mock:
        for client in order:
            run = measure(client, mock, payloads, args.concurrency, args.timeout, uvloop)
            runs[client].append(run)
            print(
                f"{client:>8}: {run['rps']:,.0f} req/s ({run['seconds']:.2f} s); "
                f"cores busy: client {run['client_cores']:.2f}, mock {run['mock_cores']:.2f}"
            )
    best = {c: max(rs, key=lambda r: r["rps"]) for c, rs in runs.items()}
    ratio = best["aiohttp"]["rps"] / best["httpx"]["rps"]
    loop_name = "uvloop" if uvloop else "asyncio"
    table = [
        (
            "requests per run",
            f"{args.requests:,} chat completions (+{WARMUP} untimed warm-up), concurrency "
            f"{args.concurrency}, {loop_name}",
        ),
        *[
            (
                f"{c} (best of {len(rs)})",
                f"{best[c]['rps']:,.0f} req/s; runs: {_rates(rs)}; "
                f"cores busy: client {best[c]['client_cores']:.2f}, mock {best[c]['mock_cores']:.2f}",
            )
            for c, rs in runs.items()
        ],
        ("ratio aiohttp / httpx", f"{ratio:.2f}x"),
        ("versions", f"httpx {httpx.__version__}, aiohttp {aiohttp.__version__}, {os.cpu_count()} cores"),
    ]
    result = bc.default_result(args) | {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "event_loop": loop_name,
        "runs": runs,
        "best_rps": {c: r["rps"] for c, r in best.items()},
        "ratio_aiohttp_over_httpx": ratio,
        "versions": {"httpx": httpx.__version__, "aiohttp": aiohttp.__version__},
    }
    # no target: this benchmark informs a choice
    bc.report(NAME, args, table, result, bc.Targets())
    print(f"INFO http_clients_aiohttp_over_httpx: {ratio:.2f}")


if __name__ == "__main__":
    main()
