"""The client commands of the CLI (`files`, `batches`, `prompts`, `label | extract |
summarize | enrich | run-prompt`) as subprocesses against a real server: human and `--json`
output, `--profile`, and the exit codes of the documented scheme (batchgate.cli.client)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import Server, chat_line, free_port, jsonl, parse_jsonl

FAST = ("--poll-interval", "0.1", "--timeout", "60")
REVIEWS = ["I love this kettle, it boils fast.", "Broke after two days. Awful.", "It is a kettle."]


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m batchgate ARGS`, with only the given BATCHGATE_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGATE_")}
    cmd = [sys.executable, "-m", "batchgate", *args]
    return subprocess.run(cmd, env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def fails(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The exit code, and the one-line reason on stderr without a traceback."""
    assert result.returncode == code, f"exit {result.returncode} (wanted {code}): {result.stdout}{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def env(start_server: Callable[..., Server], tmp_path: Path) -> dict[str, str]:
    """A server with API keys (scripted echo backend), reached through the env fallbacks."""
    server = start_server()
    return {
        "BATCHGATE_BASE_URL": server.url,
        "BATCHGATE_API_KEY": server.create_key("cli"),
        "BATCHGATE_PROFILES": str(tmp_path / "no-profiles.toml"),
    }


def write_csv(path: Path, rows: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["content", "shop"])
        writer.writerows([text, f"shop{n}"] for n, text in enumerate(rows))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_files_upload_list_show_download_delete(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_bytes(jsonl([chat_line("a"), chat_line("b")]))
    file = as_json(cli(env, "files", "upload", str(source), "--json"))
    assert file["id"].startswith("file-") and file["purpose"] == "batch" and file["filename"] == "requests.jsonl"
    assert file["id"] in [f["id"] for f in as_json(cli(env, "files", "list", "--json"))]
    assert as_json(cli(env, "files", "show", file["id"], "--json"))["bytes"] == source.stat().st_size
    assert file["id"] in ok(cli(env, "files", "list"))  # the table
    copy = tmp_path / "copy.jsonl"
    ok(cli(env, "files", "download", file["id"], "-o", str(copy)))
    assert copy.read_bytes() == source.read_bytes()
    assert as_json(cli(env, "files", "delete", file["id"], "--json"))["deleted"] is True
    assert "No such file" not in fails(cli(env, "files", "show", file["id"]), 2)


def test_operation_batches_create_wait_show_list_download_cancel(env: dict[str, str], tmp_path: Path) -> None:
    items = tmp_path / "items.json"
    items.write_text(json.dumps([{"content": "first", "metadata": {"n": 1}}, "second"]))
    created = cli(
        env,
        "batches",
        "create",
        "--operation",
        "label",
        "--items-file",
        str(items),
        "-p",
        'categories=["a","b"]',
        "--json",
    )
    batch_id = as_json(created)["batch_id"]
    done = as_json(cli(env, "batches", "wait", batch_id, *FAST, "--json"))
    assert done["status"] == "completed" and done["total_items"] == 2
    assert as_json(cli(env, "batches", "show", batch_id, "--json"))["batch_id"] == batch_id
    assert batch_id in [b["batch_id"] for b in as_json(cli(env, "batches", "list", "--json"))]
    assert batch_id in ok(cli(env, "batches", "list"))

    # the echo backend's answers are not labels: failed rows with the raw text
    out = tmp_path / "out.csv"
    ok(cli(env, "batches", "download", batch_id, "-o", str(out)))
    rows = read_csv(out)
    assert [r["status"] for r in rows] == ["failed", "failed"] and "label" in rows[0] and rows[0]["n"] == "1"
    assert [r["content"] for r in rows] == ["first", "second"]  # every input column, the content included
    review = tmp_path / "review.jsonl"
    summary = as_json(
        cli(env, "batches", "download", batch_id, "-o", str(tmp_path / "ok.json"), "--review", str(review), "--json")
    )
    assert summary["rows"] == 0 and summary["review_rows"] == 2
    assert json.loads((tmp_path / "ok.json").read_text()) == []
    assert all(row["raw"] for row in parse_jsonl(review.read_text()))

    # a records file parsed by the server, with parameters from a JSON file
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"categories": ["a", "b"], "multi_label": True}))
    records = write_csv(tmp_path / "records.csv", REVIEWS)
    args = ("--records", str(records), "--params", str(params), "--json")
    from_file = as_json(cli(env, "batches", "create", "--operation", "label", *args))
    assert from_file["total_items"] == 3
    ok(cli(env, "batches", "wait", from_file["batch_id"], *FAST))
    uploaded = as_json(cli(env, "files", "upload", str(records), "--json"))["id"]
    args = ("--file-id", uploaded, "-p", 'categories=["a"]', "--content-column", "content", "--json")
    assert as_json(cli(env, "batches", "create", "--operation", "label", *args))["total_items"] == 3

    fails(cli(env, "batches", "cancel", batch_id), 2)  # 409: it has ended
    fails(cli(env, "batches", "show", "batch_nope"), 2)
    fails(cli(env, "batches", "create", "--operation", "label", "--items-file", str(items), "-p", "categories=a,b"), 2)


def test_operation_commands_over_a_records_file(env: dict[str, str], tmp_path: Path) -> None:
    records = write_csv(tmp_path / "reviews.csv", REVIEWS)
    fields = tmp_path / "fields.json"
    fields.write_text(json.dumps([{"name": "stars", "type": "integer", "description": "1 to 5"}]))
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"product": {"type": "string"}}}))
    runs = {
        "label": ("--categories", '["positive", "negative"]', "--multi-label"),
        "extract": ("--instructions", "The product.", "--schema", str(schema)),
        "summarize": ("--instructions", "One line.", "--temperature", "0.2"),
        "enrich": ("--fields", str(fields)),
        "run-prompt": ("--user-prompt-template", "Shop {shop}: {content}", "--system-prompt", "Be brief."),
    }
    for command, params in runs.items():
        out = tmp_path / f"{command}.jsonl"
        result = as_json(cli(env, command, str(records), "-o", str(out), *params, *FAST, "--json"))
        assert result["batch"]["status"] == "completed" and result["batch"]["operation"] == command.removesuffix(
            "-prompt"
        )
        rows = parse_jsonl(out.read_text())
        assert [r["metadata"]["shop"] for r in rows] == ["shop0", "shop1", "shop2"], command

    # --review: failed rows (here all: echoes are not JSON) go there, the rest to OUTPUT as CSV
    out, review = tmp_path / "labels.csv", tmp_path / "review.jsonl"
    args = ("--categories", "positive,negative", "--review", str(review), *FAST)
    line = ok(cli(env, "label", str(records), "-o", str(out), "--content-column", "content", *args))
    assert "0 rows" in line and "3 failed rows" in line
    assert out.read_text().startswith("content,shop,id,status,error,label,confidence") and read_csv(out) == []
    assert len(parse_jsonl(review.read_text())) == 3
    # the caller's own `status` column keeps its name and values; the row status is `_status`
    clashing = tmp_path / "clashing.csv"
    clashing.write_text("content,status\ngreat,open\nawful,closed\n")
    ok(cli(env, "label", str(clashing), "-o", str(out), *args))
    assert out.read_text().startswith("content,status,id,_status,error,label,confidence")
    assert [r["status"] for r in parse_jsonl(review.read_text())] == ["failed", "failed"]

    fails(cli(env, "label", str(records), "-o", str(out), "--categories", " , "), 2)
    fails(cli(env, "label", str(records), "-o", str(out), "--categories", "[1, 2]"), 2)
    fails(cli(env, "label", str(records), "-o", str(out), "--categories", "a,a", *FAST), 2)  # the server's 400
    fails(cli(env, "label", str(records), "-o", str(out), "--categories", "a", "--content-column", "nope", *FAST), 2)


def test_prompts_create_version_publish_and_jsonl(env: dict[str, str], tmp_path: Path) -> None:
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "user", "content": "Triage: {{ticket}}"}]))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "test-model", "max_tokens": 16}))
    created = as_json(
        cli(env, "prompts", "create", "triage", "--messages", str(messages), "--model-config", str(config), "--json")
    )
    assert created["slug"] == "triage" and created["published_version"] == 1
    messages.write_text(json.dumps([{"role": "user", "content": "Triage {{ticket}} for {{team}}"}]))
    assert as_json(cli(env, "prompts", "add-version", "triage", "--messages", str(messages), "--json"))["version"] == 2
    versions = as_json(cli(env, "prompts", "versions", "triage", "--json"))
    assert [v["version"] for v in versions] == [1, 2] and versions[1]["variables"] == ["ticket", "team"]
    assert as_json(cli(env, "prompts", "publish", "triage", "2", "--json"))["published_version"] == 2
    assert as_json(cli(env, "prompts", "show", "triage", "--json"))["published"]["version"] == 2
    assert "triage" in ok(cli(env, "prompts", "list"))
    variables = tmp_path / "variables.json"
    variables.write_text(
        json.dumps([{"ticket": "printer on fire", "team": "it"}, {"ticket": "refund", "team": "billing"}])
    )
    lines = parse_jsonl(ok(cli(env, "prompts", "jsonl", "triage", "--variables", str(variables))))
    assert len(lines) == 2 and lines[0]["body"]["prompt_slug"] == "triage"
    fails(cli(env, "prompts", "show", "nope"), 2)
    out = tmp_path / "lines.jsonl"
    written = as_json(cli(env, "prompts", "jsonl", "triage", "--variables", str(variables), "-o", str(out), "--json"))
    assert written["lines"] == 2 and parse_jsonl(out.read_text()) == lines
    fails(cli(env, "prompts", "jsonl", "triage", "--variables", str(variables), "--version", "9"), 2)


def test_profiles_choose_the_server_and_key(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server()
    key = server.create_key("profiled")
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        f'[local]\nbase_url = "{server.url}"\napi_key = "{key}"\n\n'
        f'[from-env]\nbase_url = "{server.url}"\napi_key_env = "MY_BATCHGATE_KEY"\n'
    )
    env = {"BATCHGATE_PROFILES": str(profiles)}
    assert as_json(cli(env, "files", "list", "--profile", "local", "--json")) == []
    assert as_json(cli({**env, "MY_BATCHGATE_KEY": key}, "batches", "list", "--profile", "from-env", "--json")) == []
    assert as_json(cli({**env, "BATCHGATE_PROFILE": "local"}, "prompts", "list", "--json")) == []
    fails(cli(env, "files", "list", "--profile", "local", "--api-key", "bg-wrong"), 5)  # options win
    fails(cli(env, "files", "list", "--profile", "nope"), 2)


def test_exit_codes_for_unreachable_unauthorised_and_timeouts(env: dict[str, str], tmp_path: Path) -> None:
    down = {**env, "BATCHGATE_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    fails(cli(down, "batches", "list"), 3)
    fails(cli({**env, "BATCHGATE_API_KEY": "bg-not-a-key"}, "files", "list"), 5)
    fails(cli(env, "batches", "wait", "batch_unknown", *FAST), 2)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    fails(cli(env, "batches", "create", "--operation", "label", "--items-file", str(bad)), 2)
    with stuck_server() as url:
        fails(
            cli(
                {**env, "BATCHGATE_BASE_URL": url},
                "batches",
                "wait",
                "batch_stuck",
                "--timeout",
                "0.5",
                "--poll-interval",
                "0.1",
            ),
            4,
        )


class _Stuck(BaseHTTPRequestHandler):
    """Answers every batch retrieval with a batch that never moves on."""

    def do_GET(self) -> None:
        batch_id = self.path.rstrip("/").rsplit("/", 1)[-1]
        status = {"batch_id": batch_id, "status": "processing", "operation": "label", "model": "m", "total_items": 5}
        status |= {"completed_items": 1, "failed_items": 0, "progress_percentage": 20.0, "created_at": 0}
        body = json.dumps({**status, "usage": {"input_tokens": 0, "output_tokens": 0, "cost": 0}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def stuck_server() -> Iterator[str]:
    """A stub server on 127.0.0.1 whose batches stay in_progress: for `wait --timeout`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stuck)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def local_env(start_server: Callable[..., Server], tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": "smollm2-135m", "BATCHGATE_ENGINE_SLOTS": "4"}
    server = start_server(env, insecure=True)
    yield {"BATCHGATE_BASE_URL": server.url, "BATCHGATE_PROFILES": str(tmp_path / "no-profiles.toml")}


def test_label_a_csv_with_the_local_model(local_env: dict[str, str], tmp_path: Path) -> None:
    records = write_csv(tmp_path / "reviews.csv", REVIEWS)
    out, review = tmp_path / "labels.csv", tmp_path / "review.jsonl"
    args = ("--categories", "positive,negative,neutral", "--review", str(review), *FAST)
    ok(cli(local_env, "label", str(records), "-o", str(out), "--model", "smollm2-135m", *args))
    rows = read_csv(out)
    reviewed = parse_jsonl(review.read_text())
    assert len(rows) + len(reviewed) == 3 and rows, reviewed
    for row in rows:
        assert row["status"] == "succeeded" and row["label"] in ("positive", "negative", "neutral")
        assert 0 < float(row["confidence"]) <= 1 and row["shop"].startswith("shop")
