"""`batchgate run`: an offline batch in one process, resumable after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import chat_line, jsonl, parse_jsonl

ENV = {**os.environ, "BATCHGATE_BACKEND": "scripted", "BATCHGATE_CONCURRENCY": "8", "BATCHGATE_DEAD_WORKER_AFTER": "5"}


def run(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "batchgate", "run", "in.jsonl", "-o", "out.jsonl", "--data-dir", "data", *args]
    return subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_run_writes_output_and_errors(tmp_path: Path) -> None:
    rows = [chat_line(f"r{i}") for i in range(20)] + [chat_line("bad", mock={"status": 400})]
    (tmp_path / "in.jsonl").write_bytes(jsonl(rows))
    proc = run(tmp_path, "--model", "other-model")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    out = parse_jsonl((tmp_path / "out.jsonl").read_text())
    err = parse_jsonl((tmp_path / "out.errors.jsonl").read_text())
    assert sorted(r["custom_id"] for r in out) == sorted(f"r{i}" for i in range(20))
    assert {r["response"]["body"]["model"] for r in out} == {"other-model"}  # --model rewrote every line
    assert [r["custom_id"] for r in err] == ["bad"]
    assert "20 succeeded, 1 failed" in output


def test_invalid_input_exits_non_zero_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl([chat_line("a"), {"custom_id": "b"}]))
    proc = run(tmp_path)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Line 2: missing required field 'method'" in output


def test_rerunning_after_kill_9_resumes_without_duplicates(tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(400)]
    (tmp_path / "in.jsonl").write_bytes(jsonl([chat_line(c, mock={"sleep": 0.03}) for c in ids]))
    first = run(tmp_path)
    time.sleep(2.5)  # validated, and part of the way through
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert not (tmp_path / "out.jsonl").exists()
    second = run(tmp_path)
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output
    assert "resuming batch" in output
    out = parse_jsonl((tmp_path / "out.jsonl").read_text())
    assert sorted(r["custom_id"] for r in out) == sorted(ids)  # each line exactly once
