"""Shared pieces of the scheduling benchmarks (interactive_latency.py, fairness.py,
adaptive.py): a real `batchgate serve` whose model `m` routes to a mock upstream with a
capacity (bench/mock_upstream.py), API keys of several projects, batches and timing."""

from __future__ import annotations

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

ROOT = bc.ROOT
MODEL = "m"  # the model of bench request lines (bc.request_line)


@dataclass
class Gateway:
    base_url: str
    pid: int
    data_dir: Path
    keys: dict[str, str]  # project name -> API key

    def client(self, project: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[project]}"} if project else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(300.0, connect=10.0))


def upstream_config(base_url: str, max_concurrency: int, max_retries: int = 4) -> str:
    return (
        f'[backends.mock]\nbase_url = "{base_url}"\nmax_concurrency = {max_concurrency}\nmax_retries = {max_retries}\n'
        f'read_timeout = 60\n\n[models.{MODEL}]\nbackend = "mock"\n'
    )


@contextmanager
def gateway(
    name: str, config: str, projects: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """`batchgate serve` (in-process worker) on a free port with this routing config; with
    `projects`, auth on and an admin key per project (created before it starts), else
    --insecure-no-auth (one project)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"batchgate-bench-{name}-"))
    bc.OUT_DIR.mkdir(parents=True, exist_ok=True)
    log_path = bc.OUT_DIR / f"{name}-server.log"
    (data_dir / "batchgate.toml").write_text(config)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGATE_")}
    full_env |= {"BATCHGATE_BACKEND": "scripted", "BATCHGATE_CONFIG": str(data_dir / "batchgate.toml")}
    full_env |= env or {}
    keys: dict[str, str] = {}
    scopes = ["--scope", "batch", "--scope", "sync", "--scope", "read", "--scope", "admin"]
    for project in projects:
        create = [
            sys.executable,
            "-m",
            "batchgate",
            "keys",
            "create",
            "--data-dir",
            str(data_dir),
            "--project",
            project,
        ]
        out = subprocess.run(
            [*create, *scopes], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120, check=True
        )
        keys[project] = out.stdout.strip().splitlines()[-1]
    port = bc._free_port()
    cmd = [sys.executable, "-m", "batchgate", "serve", "--host", bc.HOST, "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--log-level", "warning", *([] if projects else ["--insecure-no-auth"])]
    try:
        with bc.spawned("server", cmd, log_path, f"http://{bc.HOST}:{port}/ready", 60, cwd=ROOT, env=full_env) as proc:
            yield Gateway(f"http://{bc.HOST}:{port}", proc.pid, data_dir, keys)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def input_file(lines: int, tmp: Path, tag: str = "") -> Path:
    path = tmp / f"input-{lines}{tag}.jsonl"
    if not path.exists():
        bc.write_input(path, lines, line_bytes=200)
    return path


def submit(c: httpx.Client, path: Path, window: str = "24h") -> dict[str, Any]:
    with open(path, "rb") as f:
        r = c.post("/v1/files", data={"purpose": "batch"}, files={"file": (path.name, f, "application/jsonl")})
    r.raise_for_status()
    body = {"input_file_id": r.json()["id"], "endpoint": bc.ENDPOINT, "completion_window": window}
    r = c.post("/v1/batches", json=body)
    r.raise_for_status()
    return dict(r.json())


def wait_done(c: httpx.Client, batch_id: str, timeout: float, interval: float = 0.02) -> dict[str, Any]:
    """Poll until the batch ended; the last batch object."""
    deadline = time.perf_counter() + timeout
    while True:
        batch = dict(c.get(f"/v1/batches/{batch_id}", timeout=60).json())
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        if time.perf_counter() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch['status']} after {timeout:.0f} s")
        time.sleep(interval)


def wait_running(c: httpx.Client, batch_id: str, done_at_least: int, timeout: float = 300) -> dict[str, Any]:
    """Poll until the batch is in progress with at least `done_at_least` lines done."""
    deadline = time.perf_counter() + timeout
    while True:
        batch = dict(c.get(f"/v1/batches/{batch_id}", timeout=60).json())
        counts = batch["request_counts"]
        if batch["status"] == "in_progress" and counts["completed"] + counts["failed"] >= done_at_least:
            return batch
        if batch["status"] not in ("validating", "in_progress") or time.perf_counter() > deadline:
            raise RuntimeError(f"batch {batch_id} is {batch['status']} ({counts}), not running")
        time.sleep(0.05)


def cancel_and_wait(c: httpx.Client, batch_id: str, timeout: float = 300) -> None:
    c.post(f"/v1/batches/{batch_id}/cancel").raise_for_status()
    wait_done(c, batch_id, timeout, interval=0.1)


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def min_median_max(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return s[0], median, s[-1]


def mmm(xs: list[float], digits: int = 2, unit: str = "") -> str:
    lo, med, hi = min_median_max(xs)
    return f"min {lo:.{digits}f}{unit}, median {med:.{digits}f}{unit}, max {hi:.{digits}f}{unit}"


def latency_round(idle: list[float], loaded: list[float], load_idle: float, load_loaded: float) -> dict[str, float]:
    """One round of an idle-vs-loaded latency comparison (seconds in): p50 and p99 of each
    in ms, their loaded/idle ratios, and the load average before each phase."""
    row = {
        "idle_p50_ms": percentile(idle, 0.5) * 1000,
        "idle_p99_ms": percentile(idle, 0.99) * 1000,
        "loaded_p50_ms": percentile(loaded, 0.5) * 1000,
        "loaded_p99_ms": percentile(loaded, 0.99) * 1000,
        "load_idle": load_idle,
        "load_loaded": load_loaded,
    }
    row["p50_ratio"] = row["loaded_p50_ms"] / row["idle_p50_ms"]
    row["p99_ratio"] = row["loaded_p99_ms"] / row["idle_p99_ms"]
    return row


def latency_table(rounds: list[dict[str, float]], what: str, digits: int) -> list[tuple[str, str]]:
    """The report rows of `latency_round`s: idle and loaded p50 / p99 of `what` (min,
    median, max over rounds), and the two ratios."""

    def ms(name: str) -> str:
        return mmm([r[name] for r in rounds], digits, " ms")

    return [
        (f"idle {what}p50 / p99", f"{ms('idle_p50_ms')} / {ms('idle_p99_ms')}"),
        (f"loaded {what}p50 / p99", f"{ms('loaded_p50_ms')} / {ms('loaded_p99_ms')}"),
        ("p50 ratio loaded/idle", mmm([r["p50_ratio"] for r in rounds])),
        ("p99 ratio loaded/idle", mmm([r["p99_ratio"] for r in rounds])),
    ]


def load_range(rounds: list[dict[str, float]]) -> str:
    """The lowest and highest load average read before a phase of `latency_round`s."""
    loads = [r[k] for r in rounds for k in ("load_idle", "load_loaded")]
    return f"{min(loads)}–{max(loads)}"


def load1() -> float:
    return round(os.getloadavg()[0], 2)
