"""Dispatch (issue 4): lines/s of a chat batch sent to an OpenAI-compatible upstream.

The upstream is bench/mock_upstream.py on 127.0.0.1 (a child process that answers
instantly), so what is timed is the machinery between a JSONL file of requests and a file
of results. One --lines batch (default 20,000 chat lines of ~200 bytes, "model":
"mock-model"), three ways, one after another, against the same mock:

  (a) batchgate: a real `batchgate serve` (in-process worker, BATCHGATE_CONCURRENCY and
      the upstream's max_concurrency = --concurrency) with a routing config (BATCHGATE_CONFIG)
      sending mock-model to the mock; the JSONL is uploaded (POST /v1/files), the batch
      created (POST /v1/batches) and polled until `completed`. Timed from batch creation
      to `completed` (validation, dispatch, recording, the output file), and from the
      start of the upload.
  (b) reference: the loop a user would write: the official openai.AsyncOpenAI client
      (default settings, so httpx; --openai-http aiohttp for the SDK's DefaultAioHttpClient)
      straight at the mock, asyncio.gather over every line under an
      asyncio.Semaphore(--concurrency), each result appended to a JSONL file as it
      arrives, on asyncio.run's default loop; timed from reading the input to the last
      line written. Runs before and after the others; the faster run counts.
  (c) the LiteLLM proxy (separate venv, --litellm-venv; created on first use with
      `pip install 'litellm[proxy]'`) in front of the same mock, driven by loop (b).
      Settings a careful user would pick from LiteLLM's production notes: 1 uvicorn
      worker (its default; --litellm-workers), LITELLM_LOG=ERROR, set_verbose off,
      a master key (it refuses to start without one), no database, the local model
      cost map (the machine is offline).

Targets, same run: (a) >= 1.0x (b), and (a) >= 3x (c).

Also the latency a gateway adds to a synchronous request: --latency-requests sequential
POST /v1/chat/completions (one httpx.Client, keep-alive, after 20 warm-up requests)
straight to the mock, through batchgate and through LiteLLM; p50 / p99 of each.

Every phase checks that the mock served exactly one chat request per line, so a
misrouted gateway (e.g. to the scripted echo) fails instead of flattering the numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc
from mock_upstream import MockUpstream, run_mock

NAME = "dispatch"
MODEL = "mock-model"
CHAT = "/v1/chat/completions"
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 2  # the proxy's master key (local only)
TARGET_VS_LOOP = 1.0
TARGET_VS_LITELLM = 3.0


def write_lines(path: Path, n: int) -> int:
    """`n` chat-completion request lines for MODEL; returns the file size."""
    with open(path, "wb") as f:
        for i in range(1, n + 1):
            body = {"model": MODEL, "messages": [{"role": "user", "content": bc.input_content(i)}], "max_tokens": 16}
            f.write(orjson.dumps({"custom_id": f"req-{i:07d}", "method": "POST", "url": CHAT, "body": body}) + b"\n")
    return path.stat().st_size


# ---- (b) the loop a user would write ----------------------------------------------


async def user_loop(base_url: str, api_key: str, src: Path, dst: Path, concurrency: int, transport: str) -> None:
    # the SDK's documented alternative transport for concurrent use (`pip install 'openai[aiohttp]'`)
    http_client = openai.DefaultAioHttpClient() if transport == "aiohttp" else None
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, http_client=http_client)
    sem = asyncio.Semaphore(concurrency)
    with open(src) as f:
        lines = [json.loads(line) for line in f]
    with open(dst, "w") as out:

        async def one(line: dict[str, Any]) -> None:
            async with sem:
                resp = await client.chat.completions.create(**line["body"])
            out.write(json.dumps({"custom_id": line["custom_id"], "response": resp.model_dump()}) + "\n")

        await asyncio.gather(*(one(line) for line in lines))
    await client.close()


@dataclass
class Phase:
    seconds: float
    client_cores: float
    mock_cores: float
    other_cores: float = 0.0  # the proxy's, in (c)


@dataclass
class LoopConfig:
    src: Path
    work: Path
    lines: int
    concurrency: int
    timeout: float
    transport: str  # the openai client's HTTP transport: httpx (its default) or aiohttp


def run_loop(base_url: str, api_key: str, cfg: LoopConfig, mock: MockUpstream) -> Phase:
    """Loop (b) against `base_url` on a fresh default asyncio loop; checks the output and the mock's count."""
    dst, n = cfg.work / "loop-output.jsonl", cfg.lines
    me = psutil.Process()
    before = mock.stats()[CHAT]
    cpu_me, cpu_mock = sum(me.cpu_times()[:2]), mock.cpu_seconds()
    t0 = time.perf_counter()
    loop = user_loop(base_url, api_key, cfg.src, dst, cfg.concurrency, cfg.transport)
    asyncio.run(asyncio.wait_for(loop, cfg.timeout))
    elapsed = time.perf_counter() - t0
    phase = Phase(elapsed, (sum(me.cpu_times()[:2]) - cpu_me) / elapsed, (mock.cpu_seconds() - cpu_mock) / elapsed)
    with open(dst, "rb") as f:
        written = sum(1 for _ in f)
    dst.unlink()
    served = mock.stats()[CHAT] - before
    if written != n or served != n:
        raise RuntimeError(f"loop at {base_url}: {written} lines written, {served} served by the mock; expected {n}")
    return phase


# ---- (a) batchgate ------------------------------------------------------------------


@dataclass
class GatewayRun:
    upload_s: float
    validate_s: float  # created -> in_progress
    run_s: float  # in_progress -> finalizing
    finalize_s: float  # finalizing -> completed
    create_to_done_s: float
    upload_to_done_s: float
    gateway_cores: float
    mock_cores: float
    polls: list[float]


def routing_config(path: Path, mock: MockUpstream, concurrency: int) -> None:
    path.write_text(
        f'[backends.mock]\nbase_url = "{mock.base_url}"\nmax_concurrency = {concurrency}\n\n'
        f'[models.{MODEL}]\nbackend = "mock"\n'
    )


def gateway_batch(server: bc.Server, src: Path, n: int, mock: MockUpstream, timeout: float, poll: float) -> GatewayRun:
    before = mock.stats()[CHAT]
    cpu_mock = mock.cpu_seconds()
    with bc.client(server) as c:
        t0 = time.perf_counter()
        file_obj = bc.upload(c, src)
        t_up = time.perf_counter()
        batch = bc.create_batch(c, file_obj["id"])
        t_created = time.perf_counter()
        batch, seen = bc.wait_status(c, batch["id"], "completed", timeout, poll)
    counts, served = batch["request_counts"], mock.stats()[CHAT] - before
    if counts["completed"] != n or counts["failed"] or served != n:
        raise RuntimeError(
            f"batchgate: request_counts {counts}, {served} requests served by the mock; expected {n} "
            f"(is mock-model routed to the mock? see {server.log_path})"
        )
    t_done = seen["completed"]
    time.sleep(0.05)  # one more RSS/CPU sample after the end
    return GatewayRun(
        upload_s=t_up - t0,
        validate_s=seen["in_progress"] - t_created,
        run_s=seen["finalizing"] - seen["in_progress"],
        finalize_s=t_done - seen["finalizing"],
        create_to_done_s=t_done - t_created,
        upload_to_done_s=t_done - t0,
        gateway_cores=server.rss.cpu_cores(t_created, t_done),
        mock_cores=(mock.cpu_seconds() - cpu_mock) / (t_done - t0),
        polls=seen["_poll_latencies"],
    )


# ---- (c) LiteLLM ---------------------------------------------------------------------


def litellm_exe(venv: Path, install: bool) -> Path | None:
    """The `litellm` command of `venv`, creating the venv first when asked."""
    exe = venv / "bin" / "litellm"
    if exe.exists() or not install:
        return exe if exe.exists() else None
    print(f"creating {venv} with litellm[proxy] (once; a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"]
    subprocess.run(pip, check=True, timeout=1200)
    return exe


def litellm_version(exe: Path) -> str:
    py = exe.parent / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()


@contextmanager
def run_litellm(exe: Path, mock: MockUpstream, workers: int, work: Path) -> Iterator[tuple[str, int]]:
    """`litellm --config` on a free 127.0.0.1 port; yields (base_url with /v1, pid)."""
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {mock.base_url}\n"
        "      api_key: sk-mock\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
        "  request_timeout: 600\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    port = bc._free_port()
    log_path = bc.OUT_DIR / f"{NAME}-litellm.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "OPENAI_", "DATABASE_URL"))}
    env |= {"LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [str(exe), "--config", str(config), "--host", bc.HOST, "--port", str(port), "--num_workers", str(workers)]
    base = f"http://{bc.HOST}:{port}"
    with bc.spawned("litellm", cmd, log_path, base + "/health/liveliness", 180, cwd=work, env=env, poll=0.5) as proc:
        yield base + "/v1", proc.pid


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (LiteLLM's workers)."""
    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


# ---- synchronous latency -------------------------------------------------------------


def sync_latencies(base_url: str, api_key: str | None, n: int) -> list[float]:
    """Seconds per sequential chat completion through `base_url` (after 20 warm-up requests)."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": bc.input_content(1)}], "max_tokens": 16}
    out = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as c:
        for i in range(n + 20):
            t0 = time.perf_counter()
            r = c.post("/chat/completions", json=body)
            dt = time.perf_counter() - t0
            if r.status_code != 200 or r.json()["choices"][0]["message"]["content"] != "ok":
                raise RuntimeError(f"sync request to {base_url}: HTTP {r.status_code}: {r.text[:300]}")
            if i >= 20:
                out.append(dt)
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def latency_row(xs: list[float], direct: list[float] | None = None) -> str:
    text = f"p50 {pct(xs, 0.5):.2f} ms, p99 {pct(xs, 0.99):.2f} ms"
    if direct is not None:
        text += (
            f" (added: p50 +{pct(xs, 0.5) - pct(direct, 0.5):.2f} ms, p99 +{pct(xs, 0.99) - pct(direct, 0.99):.2f} ms)"
        )
    return text


# ---- main ------------------------------------------------------------------------------


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 20_000)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight, every way (default 64)")
    parser.add_argument("--skip-gateway", action="store_true", help="skip (a) batchgate")
    parser.add_argument("--skip-litellm", action="store_true", help="skip (c) LiteLLM")
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/litellm-venv"), help="venv holding litellm")
    parser.add_argument("--no-install-litellm", action="store_true", help="skip (c) if --litellm-venv is missing")
    parser.add_argument("--litellm-workers", type=int, default=1, help="litellm --num_workers (default 1)")
    parser.add_argument(
        "--openai-http",
        choices=["httpx", "aiohttp"],
        default="httpx",
        help="the loop's openai client transport: httpx (default) or DefaultAioHttpClient (needs openai[aiohttp])",
    )
    parser.add_argument("--latency-requests", type=int, default=300, help="sequential sync requests per target")
    args = parser.parse_args()
    n, conc = args.lines, args.concurrency
    exe = None
    if not args.skip_litellm:
        exe = litellm_exe(args.litellm_venv, install=not args.no_install_litellm)
        if exe is None:
            print(f"no litellm in {args.litellm_venv}: skipping (c)")
    work = Path(tempfile.mkdtemp(prefix="batchgate-bench-dispatch-", dir=args.tmp_dir))
    loops: list[Phase] = []
    gw: GatewayRun | None = None
    lt: Phase | None = None
    lat: dict[str, list[float]] = {}
    try:
        src = work / "input.jsonl"
        size = write_lines(src, n)
        cfg = LoopConfig(src, work, n, conc, args.timeout, args.openai_http)
        print(f"generated {n:,} lines, {bc.mb(size)}")
        with run_mock(f"{NAME}-mock") as mock:
            loops.append(run_loop(mock.base_url, "sk-mock", cfg, mock))
            print(f"(b) openai loop -> mock: {loops[-1].seconds:.2f} s = {n / loops[-1].seconds:,.0f} lines/s")
            lat["direct"] = sync_latencies(mock.base_url, None, args.latency_requests)
            if not args.skip_gateway:
                config = work / "batchgate.toml"
                routing_config(config, mock, conc)
                env = {"BATCHGATE_CONFIG": str(config), "BATCHGATE_CONCURRENCY": conc}
                with bc.run_server(NAME, env=env, tmp_dir=args.tmp_dir) as server:
                    with bc.profiler(args.profile, server.pid, NAME, args.profile_gil, args.profile_idle):
                        gw = gateway_batch(server, src, n, mock, args.timeout, args.poll)
                    print(f"(a) batchgate: {gw.create_to_done_s:.2f} s = {n / gw.create_to_done_s:,.0f} lines/s")
                    lat["batchgate"] = sync_latencies(server.base_url + "/v1", None, args.latency_requests)
            if exe is not None:
                with run_litellm(exe, mock, args.litellm_workers, work) as (lt_url, lt_pid):
                    cpu_lt, t0 = tree_cpu_seconds(lt_pid), time.perf_counter()
                    lt = run_loop(lt_url, LITELLM_KEY, cfg, mock)
                    lt.other_cores = (tree_cpu_seconds(lt_pid) - cpu_lt) / (time.perf_counter() - t0)
                    print(f"(c) openai loop -> litellm -> mock: {lt.seconds:.2f} s = {n / lt.seconds:,.0f} lines/s")
                    lat["litellm"] = sync_latencies(lt_url, LITELLM_KEY, args.latency_requests)
            loops.append(run_loop(mock.base_url, "sk-mock", cfg, mock))
            print(f"(b) again: {loops[-1].seconds:.2f} s = {n / loops[-1].seconds:,.0f} lines/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref = min(loops, key=lambda p: p.seconds)
    ref_rate = n / ref.seconds
    table = [
        ("lines", f"{n:,} chat completions ({bc.mb(size)} input), concurrency {conc}, mock upstream on 127.0.0.1"),
        (
            f"(b) openai.AsyncOpenAI ({args.openai_http}) + gather/Semaphore -> mock",
            f"{ref.seconds:.2f} s = {ref_rate:,.0f} lines/s (runs: {', '.join(f'{p.seconds:.2f}' for p in loops)} s); "
            f"cores busy: loop {ref.client_cores:.2f}, mock {ref.mock_cores:.2f}",
        ),
    ]
    result = bc.default_result(args) | {
        "lines": n,
        "concurrency": conc,
        "loop_runs_s": [p.seconds for p in loops],
        "loop_lines_per_s": ref_rate,
        "openai_version": openai.__version__,
        "openai_http": args.openai_http,
    }
    targets = bc.Targets()
    if gw is not None:
        rate = n / gw.create_to_done_s
        table += [
            ("(a) batchgate: upload (POST /v1/files)", f"{gw.upload_s:.2f} s"),
            ("(a) created -> in_progress (validation)", f"{gw.validate_s:.2f} s"),
            ("(a) in_progress -> finalizing (dispatch)", f"{gw.run_s:.2f} s = {n / gw.run_s:,.0f} lines/s"),
            ("(a) finalizing -> completed (output file)", f"{gw.finalize_s:.2f} s"),
            ("(a) created -> completed", f"{gw.create_to_done_s:.2f} s = {rate:,.0f} lines/s"),
            ("(a) upload start -> completed", f"{gw.upload_to_done_s:.2f} s = {n / gw.upload_to_done_s:,.0f} lines/s"),
            ("(a) cores busy (server + job process / mock)", f"{gw.gateway_cores:.2f} / {gw.mock_cores:.2f}"),
            ("(a) GET /v1/batches/{id} during the run", bc.latency_summary(gw.polls)),
            (
                "ratio (a) / (b)",
                f"{rate / ref_rate:.2f}x (from upload start: {n / gw.upload_to_done_s / ref_rate:.2f}x)",
            ),
        ]
        result["gateway"] = vars(gw) | {"lines_per_s": rate, "ratio_vs_loop": rate / ref_rate}
        targets.check(
            f"dispatch_vs_openai_loop>={TARGET_VS_LOOP:g}", rate / ref_rate, rate >= TARGET_VS_LOOP * ref_rate
        )
    if lt is not None:
        lt_rate = n / lt.seconds
        table += [
            (
                f"(c) loop (b) -> LiteLLM {litellm_version(exe) if exe else ''} -> mock",
                f"{lt.seconds:.2f} s = {lt_rate:,.0f} lines/s; cores busy: litellm {lt.other_cores:.2f}, "
                f"loop {lt.client_cores:.2f}, mock {lt.mock_cores:.2f}",
            ),
            ("(c) LiteLLM settings", f"{args.litellm_workers} worker(s), LITELLM_LOG=ERROR, master key, no database"),
        ]
        result["litellm"] = vars(lt) | {"lines_per_s": lt_rate, "workers": args.litellm_workers}
        if gw is not None:
            rate = n / gw.create_to_done_s
            table.append(("ratio (a) / (c)", f"{rate / lt_rate:.2f}x"))
            targets.check(
                f"dispatch_vs_litellm>={TARGET_VS_LITELLM:g}", rate / lt_rate, rate >= TARGET_VS_LITELLM * lt_rate
            )
    for name, xs in lat.items():
        label = f"sync latency, {len(xs)} sequential requests, {'direct to the mock' if name == 'direct' else 'via ' + name}"
        table.append((label, latency_row(xs, None if name == "direct" else lat["direct"])))
        result[f"sync_latency_{name}_ms"] = {"p50": pct(xs, 0.5), "p99": pct(xs, 0.99)}
    bc.report(NAME, args, table, result, targets)
    for skipped, what in ((gw is None, "(a) batchgate"), (lt is None, "(c) LiteLLM")):
        if skipped:
            print(f"INFO {what} skipped: its targets were not checked")


if __name__ == "__main__":
    main()
