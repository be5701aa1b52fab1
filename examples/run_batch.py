"""The main job: start a batchgate server, run a batch through it with the official
`openai` client, and write the results next to this script.

    make run            # or: .venv/bin/python examples/run_batch.py [INPUT.jsonl]

It uses a throwaway data dir under examples/out/ and stops the server at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

HERE = Path(__file__).parent
console = Console()


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "reviews.jsonl"
    out_dir = HERE / "out"
    data_dir = out_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)  # a throwaway store: each run starts clean
    out_dir.mkdir(exist_ok=True)
    port = _free_port()
    batchgate = [sys.executable, "-m", "batchgate"]
    key = subprocess.run(
        [*batchgate, "keys", "create", "--project", "examples", "--data-dir", str(data_dir)],
        check=True, capture_output=True, text=True,
    ).stdout.split()[-1]  # fmt: skip
    log = open(out_dir / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    # the embedded engine on its default model (qwen2.5-1.5b) unless the environment says otherwise
    env = {"BATCHGATE_BACKEND": "local", **os.environ}
    server = subprocess.Popen(
        [*batchgate, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=5)
        _wait_until_up(client)
        with source.open("rb") as f:
            file = client.files.create(file=(source.name, f), purpose="batch")
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        console.print(f"batch [bold]{batch.id}[/] created from {source} ({file.bytes} bytes)")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("validating", total=None)
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(0.2)
                batch = client.batches.retrieve(batch.id)
                counts = batch.request_counts
                done = (counts.completed + counts.failed) if counts else 0
                progress.update(task, description=batch.status, completed=done, total=counts.total if counts else None)
        if batch.status != "completed":
            console.print(f"[red]batch ended {batch.status}[/]: {batch.errors}")
            return 1
        written = []
        for file_id, name in ((batch.output_file_id, "output.jsonl"), (batch.error_file_id, "errors.jsonl")):
            if file_id:
                path = out_dir / name
                client.files.content(file_id).write_to_file(path)
                written.append(path)
        counts = batch.request_counts
        assert counts is not None
        console.print(f"[green]completed[/]: {counts.completed} succeeded, {counts.failed} failed")
        for path in written:
            console.print(f"  {path}")
        return 0
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(client: OpenAI, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            client.files.list(limit=1)
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
