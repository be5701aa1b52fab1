"""Shared helpers for the batchgate benchmarks (not a test suite: run the scripts).

Everything here targets 127.0.0.1 only, runs under hard time limits, and cleans up:
servers are started as child processes (terminated, then killed, in `finally`; on
Linux they also get SIGTERM if the benchmark itself dies) and data dirs are temp dirs
removed afterwards.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import functools
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the dev extras
    sys.exit("psutil is required: .venv/bin/pip install psutil")

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
HOST = "127.0.0.1"
ENDPOINT = "/v1/chat/completions"
MB = 1_000_000  # decimal megabytes, as in the targets ("300 MB")

# ---- the input file ---------------------------------------------------------------

_SEED_TEXT = (
    "summarize the following customer review in one short sentence and classify its "
    "sentiment as positive negative or neutral the product arrived late but works well "
    "battery life is great screen is dim support answered quickly translate this paragraph "
    "into french keeping the tone formal extract all dates and amounts from the invoice "
    "below write a polite reply declining the meeting request explain recursion to a child"
)


@functools.lru_cache(maxsize=1)
def _text_pool() -> str:
    # a long, deterministic, varied text to slice contents from
    words = _SEED_TEXT.split()
    out, x = [], 12345
    for _ in range(20_000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(words[x % len(words)])
    return " ".join(out)


def request_line(i: int, content: str) -> bytes:
    """One input line, in the spacing json.dumps uses (what most clients write)."""
    return (
        f'{{"custom_id": "req-{i:07d}", "method": "POST", "url": "{ENDPOINT}", '
        f'"body": {{"model": "m", "messages": [{{"role": "user", "content": "{content}"}}], '
        f'"max_tokens": 16}}}}\n'
    ).encode()


def write_input(path: Path, lines: int, line_bytes: int = 200) -> int:
    """Write `lines` chat-completion request lines of about `line_bytes` bytes; returns the size."""
    size = 0
    with open(path, "wb", buffering=4 << 20) as f:
        buf: list[bytes] = []
        for i in range(1, lines + 1):
            buf.append(request_line(i, input_content(i, line_bytes)))
            if len(buf) >= 10_000:
                chunk = b"".join(buf)
                size += len(chunk)
                f.write(chunk)
                buf = []
        if buf:
            chunk = b"".join(buf)
            size += len(chunk)
            f.write(chunk)
    return size


def input_content(i: int, line_bytes: int = 200) -> str:
    """The message content of input line i, as write_input makes it."""
    pool = _text_pool()
    want = max(8, line_bytes - len(request_line(0, "")))
    start = (i * 7919) % (len(pool) - want - 1)
    return pool[start : start + want]


def echo_body(i: int, content: str) -> dict[str, Any]:
    """The chat completion the scripted backend answers for an input line (same shape and size)."""
    text = "echo: " + content
    tokens_in, tokens_out = len(content.split()), len(text.split())
    return {
        "id": f"cmpl-{i:024x}",
        "object": "chat.completion",
        "created": 1_700_000_000 + i,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out},
    }


# ---- machine and results ----------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "batchgate"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if dirty:
            commit += "+dirty"
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "cpu_model": cpu,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "orjson": orjson.__version__,
        "git_commit": commit,
        "date_utc": dt.datetime.now(dt.UTC).strftime("%a %b %d %H:%M:%S UTC %Y"),
    }


def command_line() -> str:
    return ".venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


@dataclass
class Targets:
    lines: list[tuple[str, float, bool]] = field(default_factory=list)

    def check(self, name: str, value: float, ok: bool) -> None:
        self.lines.append((name, value, ok))

    def print(self) -> None:
        for name, value, ok in self.lines:
            print(f"TARGET {name}: {fmt(value)} {'PASS' if ok else 'MISS'}")

    def as_json(self) -> list[dict[str, Any]]:
        return [{"target": n, "value": v, "pass": ok} for n, v, ok in self.lines]


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n== {title} ==")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print()


def save(name: str, result: dict[str, Any], args: argparse.Namespace, table: list[tuple[str, str]]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"result written to {os.path.relpath(path, ROOT)}")
    if getattr(args, "record_results", False):
        append_results_md(name, result, table)
        print(f"appended to {os.path.relpath(RESULTS_MD, ROOT)}")
    return path


def append_results_md(name: str, result: dict[str, Any], table: list[tuple[str, str]]) -> None:
    m = result["machine"]
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text(
            "# batchgate benchmark results\n\n"
            "Appended by `bench/*.py --record-results` (see bench/README.md). Every run measures "
            "its own reference in the same process, so compare ratios across machines, not "
            "absolute numbers. Missed targets are recorded as MISS, not dropped.\n"
        )
    out = [
        f"\n## {name} — {m['date_utc']}\n",
        f"- machine: nproc={m['nproc']}, RAM={m['ram_gib']} GiB, CPU: {m['cpu_model']}; "
        f"loadavg at start {m['loadavg_at_start']}",
        f"- software: Python {m['python']}, SQLite {m['sqlite']}, orjson {m['orjson']}, "
        f"batchgate commit {m['git_commit']}",
        f"- command: `{result['command']}`",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in table],
        "",
        *[f"- `TARGET {t['target']}: {fmt(t['value'])} {'PASS' if t['pass'] else 'MISS'}`" for t in result["targets"]],
        "",
    ]
    with open(RESULTS_MD, "a") as f:
        f.write("\n".join(out))


def base_parser(description: str, default_lines: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--lines", type=int, default=default_lines, help=f"request lines (default {default_lines:,})")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where temp data dirs go (default: $TMPDIR)")
    p.add_argument("--timeout", type=float, default=1800.0, help="hard cap in seconds for the server-side wait")
    p.add_argument("--poll", type=float, default=0.02, help="GET /v1/batches/{id} polling interval (default 0.02 s)")
    p.add_argument("--profile", action="store_true", help="py-spy the server during the measured phase")
    p.add_argument("--profile-gil", action="store_true", help="with --profile: only samples holding the GIL")
    p.add_argument("--profile-idle", action="store_true", help="with --profile: include idle/waiting threads")
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    return p


# ---- the server under test --------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples a process's RSS and CPU time (user + system) every `interval` s until stopped."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True, name="rss-sampler")
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int, float]] = []  # (perf_counter, rss bytes, cpu seconds)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            # the server and its children (batch jobs run in a child process): their sum
            # is what the server costs
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                return
            rss, cpu_seconds = 0, 0.0
            for proc in procs:
                try:
                    with proc.oneshot():
                        rss += proc.memory_info().rss
                        times = proc.cpu_times()
                        cpu_seconds += times.user + times.system
                except psutil.Error:
                    if proc is self.proc:
                        return
            self.samples.append((time.perf_counter(), rss, cpu_seconds))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        window = [rss for t, rss, _ in self.samples if t0 <= t <= t1]
        return max(window) if window else 0

    def _last(self, t: float) -> tuple[float, int, float]:
        before = [s for s in self.samples if s[0] <= t]
        return before[-1] if before else self.samples[0]

    def at(self, t: float) -> int:
        """RSS of the last sample at or before t."""
        return self._last(t)[1] if self.samples else 0

    def cpu_cores(self, t0: float, t1: float) -> float:
        """Average cores the process used between t0 and t1 (CPU seconds / wall seconds)."""
        a, b = self._last(t0), self._last(t1)
        return (b[2] - a[2]) / (b[0] - a[0]) if b[0] > a[0] else 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # the server gets SIGTERM if the benchmark process dies (Linux only; best effort)
    with suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    base_url: str
    pid: int
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    rss: RssSampler


@contextmanager
def run_server(
    name: str,
    env: dict[str, str] | None = None,
    tmp_dir: Path | None = None,
    root: Path | None = None,
    serve_args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """A real `batchgate serve` on a free 127.0.0.1 port, with its own temp data dir;
    `root`: run the batchgate source tree there instead of this one (A/B comparisons);
    `serve_args`: more options (`--no-worker`)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"batchgate-bench-{name}-", dir=tmp_dir))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log_path = OUT_DIR / f"{name}-server.log"
    port = _free_port()
    extra = {k: str(v) for k, v in (env or {}).items()}
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGATE_")}
    full_env["BATCHGATE_BACKEND"] = "scripted"  # the instant echo backend: these measure the gateway
    full_env.update(extra)
    cmd = [
        sys.executable,
        "-m",
        "batchgate",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--insecure-no-auth",
        "--log-level",
        "warning",
        *serve_args,
    ]
    sampler: RssSampler | None = None
    try:
        with spawned(
            "server", cmd, log_path, f"http://{HOST}:{port}/ready", 60, cwd=root or ROOT, env=full_env
        ) as proc:
            sampler = RssSampler(proc.pid)
            sampler.start()
            yield Server(f"http://{HOST}:{port}", proc.pid, data_dir, log_path, extra, sampler)
    finally:
        if sampler is not None:
            sampler.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def worker_process(server: Server, k: int) -> Iterator[subprocess.Popen[bytes]]:
    """A `batchgate worker` on the server's data dir and environment (its store and
    backend), for a server run with `--no-worker`; its output in out/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGATE_")}
    env |= {"BATCHGATE_BACKEND": "scripted"} | server.env
    cmd = [sys.executable, "-m", "batchgate", "worker", "--data-dir", str(server.data_dir), "--log-level", "warning"]
    with open(server.log_path.with_name(f"{server.log_path.stem}-worker{k}.log"), "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    try:
        yield proc
    finally:
        stop_process(proc)


@contextmanager
def fresh_database(admin_url: str, name: str) -> Iterator[dict[str, str]]:
    """A new PostgreSQL database `name` on the server of `admin_url`, dropped after: the
    environment that points a server at it."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield {"BATCHGATE_DATABASE_URL": admin_url.rsplit("/", 1)[0] + "/" + name}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def spawned(
    what: str,
    cmd: list[str],
    log_path: Path,
    ready_url: str,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    poll: float = 0.1,
) -> Iterator[subprocess.Popen[bytes]]:
    """`cmd` as a child that dies with us, its output in `log_path`, once `ready_url`
    answers 200 (a RuntimeError naming the log if it exits or is not ready in `timeout`
    seconds); terminated, then killed, when the block ends."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {log_path}")
            with suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout:g} s; see {log_path}")
            time.sleep(poll)
        yield proc
    finally:
        if proc is not None:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, and kill if it is still there after 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def profiler(enabled: bool, pid: int, name: str, gil_only: bool = False, idle: bool = False) -> Iterator[None]:
    """py-spy the server (all threads, 100 Hz) while the block runs; `gil_only` keeps only
    samples of the thread holding the GIL (py-spy --gil), i.e. Python CPU time; `idle`
    also samples threads that wait (py-spy --idle: locks, the GIL, sleeps, I/O)."""
    if not enabled:
        yield
        return
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("warning: --profile needs py-spy (.venv/bin/pip install py-spy); not profiling")
        yield
        return
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"{name}-profile.txt"
    svg = OUT_DIR / f"{name}-profile.svg"
    procs = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--format",
                fmt_,
                "-o",
                str(path),
                "--threads",
                *(["--gil"] if gil_only else []),
                *(["--idle"] if idle else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        for fmt_, path in (("raw", out), ("flamegraph", svg))
    ]
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        print(f"profile: {os.path.relpath(out, ROOT)} (collapsed stacks), {os.path.relpath(svg, ROOT)}")


# ---- the API, as a client sees it -------------------------------------------------


def client(server: Server) -> httpx.Client:
    # long reads for the big upload and download; status polls pass their own, shorter timeout
    return httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(300.0, connect=10.0))


def upload(c: httpx.Client, path: Path) -> dict[str, Any]:
    """POST /v1/files, the body streamed from disk by httpx's multipart encoder."""
    with open(path, "rb") as f:
        r = c.post("/v1/files", data={"purpose": "batch"}, files={"file": (path.name, f, "application/jsonl")})
    r.raise_for_status()
    return r.json()


def create_batch(c: httpx.Client, file_id: str) -> dict[str, Any]:
    r = c.post("/v1/batches", json={"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"})
    r.raise_for_status()
    return r.json()


ORDER = ["validating", "in_progress", "finalizing", "completed"]


def wait_status(
    c: httpx.Client, batch_id: str, until: str, timeout: float, interval: float = 0.02, seen: dict | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Poll GET /v1/batches/{id} every `interval` s until the batch reaches `until` (or later).

    Returns the last batch object and {status: perf_counter when first seen}. A status
    skipped between two polls is stamped with the time of the poll that saw a later one.
    seen["_poll_latencies"] collects the round-trip time of every poll.
    """
    seen = {} if seen is None else seen
    latencies = seen.setdefault("_poll_latencies", [])
    deadline = time.perf_counter() + timeout
    goal = ORDER.index(until)
    while True:
        t_req = time.perf_counter()
        r = c.get(f"/v1/batches/{batch_id}", timeout=60)
        t = time.perf_counter()
        latencies.append(t - t_req)
        r.raise_for_status()
        batch = r.json()
        status = batch["status"]
        if status not in ORDER:
            raise RuntimeError(f"batch {batch_id} ended {status}: {batch.get('errors')}")
        for s in ORDER[: ORDER.index(status) + 1]:
            seen.setdefault(s, t)
        if ORDER.index(status) >= goal:
            return batch, seen
        if t > deadline:
            raise TimeoutError(f"batch {batch_id} still {status} after {timeout:.0f} s ({batch['request_counts']})")
        time.sleep(interval)


def latency_summary(latencies: list[float]) -> str:
    if not latencies:
        return "-"
    xs = sorted(latencies)
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000  # noqa: E731
    return f"{len(xs)} polls, median {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {xs[-1] * 1000:.1f} ms"


def mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def report(
    name: str, args: argparse.Namespace, table: list[tuple[str, str]], result: dict[str, Any], targets: Targets
) -> None:
    print_table(name, table)
    result["targets"] = targets.as_json()
    targets.print()
    save(name, result, args, table)


def default_result(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": command_line(),
        "machine": machine_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


# ---- noise-robust comparisons -----------------------------------------------------
#
# The development machines have 2 cores shared with other work: a neighbour can slow
# one way of a comparison several-fold for a minute and leave the next untouched. So the
# ways of a comparison run interleaved in rounds (a, b, a, b, ...), each round's ratio is
# taken between measurements seconds apart, the load average is recorded before every
# measurement, a round whose reference collapsed (ran far below the reference's best) is
# discarded and another round run in its place, and results are reported as min /
# median over the rounds kept.


def load1() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


@dataclass
class Sample:
    """One measurement of one way: `value` is a rate (higher is better)."""

    value: float
    load: float  # 1-minute load average just before it ran
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Round:
    index: int
    samples: dict[str, Sample]
    discarded: str | None = None  # why it does not count, if it does not


@dataclass
class Interleaved:
    """The rounds of a comparison; `reference` is the way the others are divided by."""

    ways: list[str]
    reference: str
    collapse: float
    rounds: list[Round] = field(default_factory=list)

    def kept(self) -> list[Round]:
        return [r for r in self.rounds if r.discarded is None]

    def values(self, way: str) -> list[float]:
        return [r.samples[way].value for r in self.kept()]

    def ratios(self, way: str, reference: str | None = None) -> list[float]:
        """way / reference within each kept round (measurements seconds apart)."""
        ref = reference or self.reference
        return [r.samples[way].value / r.samples[ref].value for r in self.kept()]

    def loads(self) -> list[float]:
        return [s.load for r in self.rounds for s in r.samples.values()]

    def as_json(self) -> dict[str, Any]:
        return {
            "ways": self.ways,
            "reference": self.reference,
            "collapse": self.collapse,
            "rounds": [
                {
                    "index": r.index,
                    "discarded": r.discarded,
                    "samples": {w: {"value": s.value, "load": s.load, **s.extra} for w, s in r.samples.items()},
                }
                for r in self.rounds
            ],
        }


def stats(xs: list[float]) -> dict[str, float]:
    """min / median / max of a list (the median of an even count is the mean of the middle two)."""
    s = sorted(xs)
    if not s:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan")}
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"min": s[0], "median": median, "max": s[-1]}


def min_median(xs: list[float], digits: int = 2, unit: str = "") -> str:
    st = stats(xs)
    f = f"{{:,.{digits}f}}"
    return f"min {f.format(st['min'])}{unit}, median {f.format(st['median'])}{unit}, max {f.format(st['max'])}{unit}"


def interleave(
    ways: dict[str, Any],
    rounds: int,
    reference: str,
    collapse: float = 0.6,
    max_extra: int | None = None,
    between: Any = None,
) -> Interleaved:
    """Run every way once per round, in the given order, for `rounds` kept rounds.

    Each way is a callable returning its rate (or `(rate, extra_dict)`). A round is
    discarded when its reference ran below `collapse` x the reference's best value over
    all rounds (checked again as better rounds come in, so an early collapsed round is
    caught too), and another round is run in its place, up to `max_extra` (default:
    `rounds`) extra rounds. `between`, if given, is called after each measurement
    (e.g. to let the machine settle).
    """
    if reference not in ways:
        raise ValueError(f"reference {reference!r} is not one of the ways {list(ways)}")
    extra = rounds if max_extra is None else max_extra
    result = Interleaved(list(ways), reference, collapse)
    while len(result.kept()) < rounds and len(result.rounds) < rounds + extra:
        index = len(result.rounds) + 1
        samples: dict[str, Sample] = {}
        for name, way in ways.items():
            load = load1()
            out = way()
            value, info = out if isinstance(out, tuple) else (out, {})
            samples[name] = Sample(float(value), load, dict(info))
            print(f"  round {index}: {name} {fmt(value)} (load {load})", flush=True)
            if between is not None:
                between()
        result.rounds.append(Round(index, samples))
        best = max(r.samples[reference].value for r in result.rounds)
        for r in result.rounds:
            ref = r.samples[reference].value
            if r.discarded is None and ref < collapse * best:
                r.discarded = f"reference collapsed: {fmt(ref)} < {collapse:g} x best {fmt(best)}"
                print(f"  round {r.index} discarded ({r.discarded})", flush=True)
    return result


def interleaved_rows(res: Interleaved, unit: str, labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Table rows: each way's min/median/max, each ratio's min/median, every round's values."""
    labels = labels or {}
    kept = res.kept()
    loads = res.loads()
    rows = [
        (
            "rounds",
            f"{len(kept)} kept of {len(res.rounds)} run, ways interleaved "
            f"({', '.join(res.ways)} per round); load average (1 min) before each measurement "
            f"{min(loads):.2f}-{max(loads):.2f}, median {stats(loads)['median']:.2f}",
        )
    ]
    for way in res.ways:
        rows.append((labels.get(way, way), min_median(res.values(way), 1, f" {unit}")))
    for way in res.ways:
        if way != res.reference:
            rows.append((f"ratio {way} / {res.reference}", min_median(res.ratios(way), 3)))
    for r in res.rounds:
        parts = ", ".join(f"{w} {fmt(s.value)} (load {s.load:.1f})" for w, s in r.samples.items())
        ratio = "; ".join(
            f"{w}/{res.reference} {r.samples[w].value / r.samples[res.reference].value:.3f}"
            for w in res.ways
            if w != res.reference
        )
        rows.append((f"round {r.index}" + (" (discarded)" if r.discarded else ""), f"{parts}; {ratio}"))
    return rows
