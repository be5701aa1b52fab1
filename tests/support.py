"""Shared helpers for tests: JSONL builders and a real `batchgate serve` subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from batchgate.core.errors import BackendRejectedError
from batchgate.core.ports import Backend, BackendRequest, BackendResponse

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def chat_line(custom_id: str, content: str = "hello", url: str = "/v1/chat/completions", **body: Any) -> dict:
    payload = {"model": "test-model", "messages": [{"role": "user", "content": content}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def jsonl(rows: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def parse_jsonl(data: bytes | str) -> list[dict]:
    text = data.decode() if isinstance(data, bytes) else data
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ALL_SCOPES = ("--scope", "batch", "--scope", "sync", "--scope", "read", "--scope", "admin")


class Server:
    """`batchgate serve` as a real subprocess on 127.0.0.1, on a data dir that survives restarts."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, insecure: bool = False, args: tuple[str, ...] = ()
    ):
        self.data_dir = data_dir
        self.args = args  # more `serve` options, e.g. --no-worker
        self.port = free_port()
        # the scripted echo backend unless a test asks for another (e.g. "local")
        defaults = {
            "BATCHGATE_BACKEND": "scripted",
            "BATCHGATE_POLL_INTERVAL": "0.02",
            "BATCHGATE_DEAD_WORKER_AFTER": "5",
        }
        self.env = {**os.environ, **defaults, **(env or {})}
        self.insecure = insecure
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "batchgate", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.insecure:
            cmd.append("--insecure-no-auth")
        cmd += self.args
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process for its lifetime
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        # generous: a loaded CI machine can take tens of seconds to import and migrate;
        # a server that dies says so at once (the poll below), it does not wait this out
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        """kill -9: no cleanup, no drain."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def create_key(self, project: str, *flags: str) -> str:
        """A new key's secret; `flags`: more `keys create` options (e.g. "--scope", "admin")."""
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "batchgate",
                "keys",
                "create",
                "--project",
                project,
                "--data-dir",
                str(self.data_dir),
                *flags,
            ],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip().splitlines()[-1]


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.02) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


async def answer(backend: Backend, request: BackendRequest) -> BackendResponse:
    """A backend's answer to `request`: its response, or the error answer it raised."""
    try:
        return await backend.execute(request)
    except BackendRejectedError as exc:
        return exc.response
