"""What rate limits add to a synchronous request (issue 12: goal <= 0.3 ms at p99).

Two measurements, each interleaved in rounds (off, on, on, off, ...) so both ways of a
round run seconds apart under the same load; the load average is recorded every round:

- http: a real `batchgate serve` (scripted backend, SQLite data dir), one keep-alive
  client sending chat completions one at a time on two keys: one without limits
  (metering only) and one with every kind of limit (requests, input, output and total
  tokens per minute, none ever reached) and max_parallel_requests. What a client waits
  for: the limit check (body parse, token estimate, one store transaction, headers).
  The settlement and the ledger row are written after the answer is sent.
- asgi: the same app in process through httpx's ASGITransport, which returns only when
  the app is done, so it also counts the work after the answer: "bare" (neither
  metering nor limits: the gateway before issue 12), "metered" (limits off) and
  "limited" (metering + limit check + settlement).
- store: the limiter's two transactions themselves (Limiter.acquire, .release with four
  limits and a parallel cap) on SQLite, alone and beside a thread writing ledger rows.

Run: .venv/bin/python bench/limits_overhead.py [--rounds 10] [--requests 300] [--record-results]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HOST, ROOT, Targets, command_line, machine_info, print_table, save

from batchgate.core.models import RateLimit

BIG = 10**12  # limits that are never reached: every check runs, none refuses
LIMITS = [RateLimit(kind, BIG, 60) for kind in ("requests", "input_tokens", "output_tokens", "total_tokens")]
LIMIT_FLAGS = [f for r in LIMITS for f in ("--limit", f"{r.kind}={r.limit}/1m")] + ["--max-parallel", "1000"]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "classify this short review: great"}], "max_tokens": 16}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def load1() -> float:
    return round(os.getloadavg()[0], 2)


# ---- http: a real server ------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def create_key(data_dir: Path, env: dict[str, str], *flags: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchgate",
            "keys",
            "create",
            "--project",
            "bench",
            "--data-dir",
            str(data_dir),
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def run_http(rounds: int, n: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="batchgate-bench-limits-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGATE_")}
    env["BATCHGATE_BACKEND"] = "scripted"
    keys = {"off": create_key(data_dir, env), "on": create_key(data_dir, env, *LIMIT_FLAGS)}
    port = free_port()
    cmd = [sys.executable, "-m", "batchgate", "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
            time.sleep(0.1)
        clients = {
            way: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {k}"}, timeout=30)
            for way, k in keys.items()
        }

        def one(way: str) -> float:
            started = time.perf_counter()
            r = clients[way].post("/v1/chat/completions", json=CHAT)
            elapsed = time.perf_counter() - started
            assert r.status_code == 200, r.text
            assert ("x-ratelimit-limit-requests" in r.headers) == (way == "on")
            return elapsed * 1000

        return interleave(["off", "on"], rounds, n, one)
    finally:
        proc.terminate()
        proc.wait(30)


# ---- asgi: the app in process ---------------------------------------------------------


def run_asgi(rounds: int, n: int) -> dict[str, Any]:
    from batchgate.api import create_app
    from batchgate.api.metering import Metering
    from batchgate.api.ratelimit import RateLimits
    from batchgate.app import build_services
    from batchgate.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="batchgate-bench-limits-asgi-"))
    services = build_services(Settings(home=home, backend="scripted"))
    keys = {
        "bare": services.keys.create("bench")[1],
        "metered": services.keys.create("bench")[1],
        "limited": services.keys.create("bench", limits=LIMITS, max_parallel_requests=1000)[1],
    }
    bare = create_app(services)
    bare.user_middleware = [m for m in bare.user_middleware if m.cls not in (Metering, RateLimits)]
    apps = {"bare": bare, "metered": create_app(services), "limited": create_app(services)}
    loop = asyncio.new_event_loop()
    clients = {
        way: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps[way]),
            base_url="http://bench",
            headers={"Authorization": f"Bearer {keys[way]}"},
        )
        for way in apps
    }

    async def call(way: str) -> float:
        started = time.perf_counter()
        r = await clients[way].post("/v1/chat/completions", json=CHAT)
        elapsed = time.perf_counter() - started
        assert r.status_code == 200, r.text
        return elapsed * 1000

    try:
        return interleave(["bare", "metered", "limited"], rounds, n, lambda way: loop.run_until_complete(call(way)))
    finally:
        services.close()
        loop.close()


# ---- store: the limiter's own work, without HTTP ---------------------------------------


def run_store(n: int) -> dict[str, Any]:
    """Limiter.acquire and .release on a SQLite store (the transactions a limited request
    adds), alone and beside a thread writing ledger rows as metering does."""
    import threading

    from batchgate.core.ledger import SYNC, LedgerEntry
    from batchgate.core.models import ApiKey
    from batchgate.core.ratelimit import Cost, Limiter
    from batchgate.store import SQLiteStore

    store = SQLiteStore(Path(tempfile.mkdtemp(prefix="batchgate-bench-limits-store-")) / "bench.db")
    key = ApiKey("key_bench", "proj", "", "", 0, limits=tuple(LIMITS), max_parallel_requests=1000)
    limiter = Limiter(store)
    result: dict[str, Any] = {}
    for name, beside_writer in (("alone", False), ("beside_ledger_writer", True)):
        stop = threading.Event()

        def write_ledger(stop: threading.Event) -> None:
            while not stop.is_set():
                store.add_ledger_entry(LedgerEntry(SYNC, "proj", "/v1/chat/completions", time.time(), time.time()))
                time.sleep(0.0005)

        writer = threading.Thread(target=write_ledger, args=(stop,))
        if beside_writer:
            writer.start()
        acquire, release = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            decision = limiter.acquire(key, Cost(1, 10, 16), time.time())
            t1 = time.perf_counter()
            limiter.release(key, decision, Cost(1, 10, 16), Cost(1, 8, 5), time.time())
            acquire.append((t1 - t0) * 1000)
            release.append((time.perf_counter() - t1) * 1000)
            time.sleep(0.0003)
        stop.set()
        if beside_writer:
            writer.join()
        result[name] = {
            "acquire": {"p50": pct(acquire, 50), "p99": pct(acquire, 99)},
            "release": {"p50": pct(release, 50), "p99": pct(release, 99)},
            "load": load1(),
        }
    store.close()
    return result


# ---- rounds ---------------------------------------------------------------------------


def interleave(ways: list[str], rounds: int, n: int, one: Callable[[str], float]) -> dict[str, Any]:
    for way in ways:  # warm up: connections, caches, the first store rows
        for _ in range(min(n, 100)):
            one(way)
    per_round: list[dict[str, Any]] = []
    pooled: dict[str, list[float]] = {w: [] for w in ways}
    for i in range(rounds):
        order = ways if i % 2 == 0 else ways[::-1]
        row: dict[str, Any] = {"load": load1()}
        for way in order:
            latencies = [one(way) for _ in range(n)]
            pooled[way] += latencies
            row[way] = {"p50": pct(latencies, 50), "p99": pct(latencies, 99)}
        per_round.append(row)
    return {"rounds": per_round, "pooled": {w: {"p50": pct(v, 50), "p99": pct(v, 99)} for w, v in pooled.items()}}


def added(result: dict[str, Any], way: str, reference: str, p: str) -> tuple[float, float]:
    """(min, median) over the rounds of way's percentile minus the reference's."""
    deltas = [r[way][p] - r[reference][p] for r in result["rounds"]]
    return min(deltas), statistics.median(deltas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300, help="requests per way per round")
    parser.add_argument("--record-results", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    machine = machine_info()
    http = run_http(args.rounds, args.requests)
    asgi = run_asgi(args.rounds, args.requests)
    store = run_store(args.rounds * args.requests)
    targets = Targets()
    table: list[tuple[str, str]] = []
    for name, res, pairs in (
        ("http", http, [("on", "off")]),
        ("asgi", asgi, [("metered", "bare"), ("limited", "metered"), ("limited", "bare")]),
    ):
        for way, stats in res["pooled"].items():
            table.append((f"{name} {way}: p50 / p99 (ms, pooled)", f"{stats['p50']:.3f} / {stats['p99']:.3f}"))
        for way, ref in pairs:
            for p in ("p50", "p99"):
                low, mid = added(res, way, ref, p)
                table.append((f"{name} {way} - {ref}, {p} (ms, min / median of rounds)", f"{low:+.3f} / {mid:+.3f}"))
    for name, res in store.items():
        for step in ("acquire", "release"):
            stats = res[step]
            table.append((f"store {step}, {name}: p50 / p99 (ms)", f"{stats['p50']:.3f} / {stats['p99']:.3f}"))
    loads = [r["load"] for r in http["rounds"] + asgi["rounds"]] + [r["load"] for r in store.values()]
    table.append(("load average (1 min) over the rounds", f"{min(loads)} .. {max(loads)}"))
    targets.check(
        "http added p99 of the limit check, median of rounds (ms) <= 0.3",
        m := added(http, "on", "off", "p99")[1],
        m <= 0.3,
    )
    targets.check(
        "asgi added p99 of limits + metering over bare, median of rounds (ms) <= 0.3",
        m := added(asgi, "limited", "bare", "p99")[1],
        m <= 0.3,
    )
    print_table("limits overhead", table)
    targets.print()
    result = {
        "command": command_line(),
        "machine": machine,
        "http": http,
        "asgi": asgi,
        "store": store,
        "targets": targets.as_json(),
    }
    save("limits_overhead", result, args, table)


if __name__ == "__main__":
    main()
