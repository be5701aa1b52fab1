"""`batchgate agent run`: one agent over a file of records, through the SDK's chunked,
resumable agent batches."""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path
from typing import Any

import click

from batchgate.cli.client import EXIT_USAGE, CliError, Conn, client_command, read_json


@click.group()
def agent() -> None:
    """Agents (the Swarms-compatible agent API)."""


@agent.command("run")
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--agent", "agent_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The agent_config, as a JSON file (agent_name, system_prompt, model_name, llm_args, ...).")  # fmt: skip
@click.option("--task-template", required=True, help="The task per record: {field} is the record's field.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Results, JSONL.")
@click.option("--review", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Failed records, and answers that are not the JSON the agent asks for, as JSONL.")  # fmt: skip
@click.option("--chunk-size", default=500, show_default=True, help="Records per batch.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where the job records its batches, to resume without resubmitting (default: OUTPUT.manifest.json).")  # fmt: skip
@client_command
def agent_run(
    conn: Conn,
    records: Path,
    agent_file: Path,
    task_template: str,
    output: Path,
    review: Path | None,
    chunk_size: int,
    manifest: Path | None,
) -> None:
    """Run an agent on every record of RECORDS (CSV with a header row, JSONL or a JSON
    array of objects). Each output line: {index, success, output, parsed, error, usage,
    cost, record}. Run again after an interruption with the same options: it resumes."""
    config = read_json(agent_file, "agent")
    rows = read_records(records)
    fields = [name for _, name, _, _ in string.Formatter().parse(task_template) if name]
    bodies = [{"agent_config": config, "task": render(task_template, fields, row, i)} for i, row in enumerate(rows)]
    wants_json = bool((config.get("llm_args") or {}).get("response_format"))
    kept = sent = 0
    with conn.client() as client, open(output, "w") as out, contextlib.ExitStack() as stack:
        rev = stack.enter_context(open(review, "w")) if review else out  # without --review nothing is dropped
        chunks = client.agent.batch.completions.run_chunks(
            bodies, chunk_size=chunk_size, manifest=manifest or output.with_name(output.name + ".manifest.json")
        )
        for chunk, batch in chunks:
            for offset, result in enumerate(batch.results):
                index = chunk * chunk_size + offset
                line = result_line(index, result.model_dump(), rows[index], wants_json)
                ok = line["success"] and (not wants_json or line["parsed"] is not None)
                (out if ok else rev).write(json.dumps(line) + "\n")
                kept, sent = kept + ok, sent + (not ok)
    conn.emit({"output": str(output), "succeeded": kept, "review": sent},
              lambda: click.echo(f"{kept} results in {output}; {sent} to review{f' in {review}' if review else ''}"))  # fmt: skip


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a .csv, .json (an array of objects) or JSONL file, read by the parser
    the server reads uploads with."""
    from batchgate.protocol.records import RecordsError, iter_fields

    fmt = {".csv": "csv", ".json": "json"}.get(path.suffix.lower(), "jsonl")
    try:
        with open(path, "rb") as stream:
            return list(iter_fields(stream, fmt))
    except RecordsError as exc:
        raise CliError(f"{path}: {exc.message}", EXIT_USAGE) from None


def render(template: str, fields: list[str], row: dict[str, Any], index: int) -> str:
    missing = [f for f in fields if f not in row]
    if missing:
        raise CliError(f"record {index} has no field {missing[0]!r} (--task-template uses it)", EXIT_USAGE)
    return template.format_map(row)


def result_line(index: int, result: dict[str, Any], record: dict[str, Any], wants_json: bool) -> dict[str, Any]:
    text = result["outputs"][-1]["content"] if result["outputs"] else None
    parsed = None
    if wants_json and text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    return {
        "index": index,
        "success": result["success"],
        "output": text,
        "parsed": parsed,
        "error": result["error"],
        "usage": result["usage"],
        "cost": result["cost"],
        "record": record,
    }
