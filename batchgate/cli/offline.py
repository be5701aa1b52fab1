"""`batchgate run`: an offline batch without a server, on the same core and store.

The input is accepted as a batch of the data dir's `default` project, and a worker runs
in this process until the batch ends. The batch id is recorded under `<data dir>/runs/`,
keyed by the input's content (and --model), so running the same command again after an
interruption resumes that batch instead of starting over: lines already done are kept,
the rest run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from batchgate.app import Services, build_services, build_worker, close_worker
from batchgate.core.models import BatchRecord, BatchStatus
from batchgate.core.states import TERMINAL_STATUSES
from batchgate.settings import Settings

COPY_SIZE = 1 << 20


def run_offline(
    settings: Settings, source: Path, output: Path, errors: Path, model: str | None, console: Console
) -> int:
    """Run (or resume) the batch of `source`; returns the process exit code."""
    services = build_services(settings)
    try:
        batch = _resume_or_submit(services, source, model, console)
        batch = asyncio.run(_run_until_done(services, batch.id, console))
        return _write_results(services, batch, output, errors, console)
    finally:
        services.close()


def _resume_or_submit(services: Services, source: Path, model: str | None, console: Console) -> BatchRecord:
    project = services.keys.default_project().id
    digest = hashlib.sha256(f"model={model}\n".encode())
    with open(source, "rb") as f:
        while chunk := f.read(COPY_SIZE):
            digest.update(chunk)
    state = services.settings.home / "runs" / f"{digest.hexdigest()[:32]}.json"
    if state.exists():
        batch_id = json.loads(state.read_text())["batch_id"]
        batch = services.store.get_batch(batch_id, project)
        if batch is not None:
            console.print(
                f"resuming batch {batch.id} ({batch.status.value}, {batch.completed + batch.failed} lines done)"
            )
            return batch
    with services.files.upload(project) as upload:
        _copy_input(source, upload.write, model)
        file = upload.commit("batch", source.name)
    batch = services.batches.create(project, file.id, _endpoint(source), "365d")
    state.parent.mkdir(parents=True, exist_ok=True)
    temp = state.with_suffix(".tmp")
    temp.write_text(json.dumps({"batch_id": batch.id, "input": str(source.resolve())}))
    temp.replace(state)
    console.print(f"batch {batch.id} from {source} ({file.bytes:,} bytes)")
    return batch


def _copy_input(source: Path, write: Callable[[bytes], None], model: str | None) -> None:
    """Copy the input into the store, rewriting each line's `body.model` when one is given
    (a line that cannot be rewritten is copied as it is: validation reports it)."""
    with open(source, "rb") as f:
        if model is None:
            while chunk := f.read(COPY_SIZE):
                write(chunk)
            return
        for line in f:
            try:
                obj = orjson.loads(line)
                obj["body"]["model"] = model
                line = orjson.dumps(obj) + b"\n"
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
            write(line)


def _endpoint(source: Path) -> str:
    """The `url` of the first line: the batch's endpoint (validation checks every line's)."""
    with open(source, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    url = orjson.loads(line).get("url")
                except (orjson.JSONDecodeError, AttributeError):
                    url = None
                return url if isinstance(url, str) else "/v1/chat/completions"
    return "/v1/chat/completions"


async def _run_until_done(services: Services, batch_id: str, console: Console) -> BatchRecord:
    worker = build_worker(services, jobs_in_subprocess=True)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    started, first_done = time.monotonic(), None
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("validating", total=None, rate="")
            while True:
                batch = services.batches.get(services.keys.default_project().id, batch_id)
                done = batch.completed + batch.failed
                if first_done is None:
                    first_done = done
                elapsed = max(time.monotonic() - started, 1e-6)
                rate = f"{(done - first_done) / elapsed:,.1f} lines/s  {batch.output_tokens / elapsed:,.1f} tokens/s"
                progress.update(
                    bar, description=batch.status.value, completed=done, total=batch.total or None, rate=rate
                )
                if batch.status in TERMINAL_STATUSES:
                    return batch
                if task.done():
                    task.result()  # the worker died: surface why
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await task
        await close_worker(worker)


def _write_results(services: Services, batch: BatchRecord, output: Path, errors: Path, console: Console) -> int:
    if batch.status == BatchStatus.FAILED:
        console.print(f"[red]the input was rejected[/] ({len(batch.errors or [])} errors):")
        for error in batch.errors or []:
            console.print(f"  {error.message}")
        return 1
    for file_id, path in ((batch.output_file_id, output), (batch.error_file_id, errors)):
        if file_id is None:
            path.unlink(missing_ok=True)  # no stale results from an earlier run
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with services.blobs.open(file_id) as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target, COPY_SIZE)
    console.print(
        f"{batch.status.value}: {batch.completed} succeeded, {batch.failed} failed; "
        f"{batch.input_tokens:,} tokens in, {batch.output_tokens:,} out"
    )
    console.print(f"  output: {output}" + (f"\n  errors: {errors}" if batch.error_file_id else ""))
    return 0
