"""The API fuzzed from its own /openapi.json (issue 11, "keep it that way"): schemathesis
generates requests for every operation (valid and invalid bodies, parameters and headers,
plus stateful sequences that follow created ids into reads, cancels and deletes) against a
real `batchgate serve` on the scripted backend, with an API key, a fixed seed and a fixed
example budget. The run must find no server error (5xx), no status the document does not
declare and no response that breaks its documented schema.

Runs through schemathesis's own CLI (`python -m schemathesis.cli run`): its JSON report
gives the numbers and its text output the reproducing curl command of each failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import Server

SEED = 20261128
# examples per operation and phase: ~5,000 requests over the 50 operations, about a
# minute and a half on an idle 2-core machine and under three on a loaded one
MAX_EXAMPLES = 20
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def test_schemathesis_finds_no_server_error_or_undocumented_answer(server: Server, tmp_path: Path) -> None:
    key = server.create_key("fuzz")
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # one client: hypothesis describes strategies with ast.parse, which CPython 3.11
        # does not guard across threads ("AST constructor recursion depth mismatch")
        "--workers",
        "1",
        "--no-shrink",  # a failure's curl command is enough; shrinking costs minutes
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    summary = json.loads(report.read_text())
    # the failures (each with its curl command) and the summary; a generation error's traceback is cut
    output = run.stdout[-20_000:] + run.stderr[-5_000:]
    cases = summary["test_cases"]
    assert summary["complete"], output
    assert cases["generated"] >= 1_000, cases  # the budget really ran
    operations = summary["operations"]
    assert operations["tested"] == operations["total"] >= 50, operations  # every operation, none skipped
    assert summary["failures"] == [], output
    assert summary["errors"] == [], output
    assert run.returncode == 0, output
