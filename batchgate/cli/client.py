"""The client commands: `files`, `batches`, `prompts` and the operations `label | extract |
summarize | enrich | run-prompt`, all through the SDK against a running server (`run` is
taken by the offline batch run, so the `run` operation's command is `run-prompt`).

Every command takes `--profile NAME` (a table of the profiles file; env BATCHGATE_PROFILE),
`--base-url` and `--api-key` (which override the profile's) and `--json` (machine-readable
output on stdout). Without them the SDK's fallbacks apply: env BATCHGATE_BASE_URL /
BATCHGATE_API_KEY, then http://127.0.0.1:8000 without a key. Tables, results and `--json`
go to stdout; progress bars (only on a terminal) and messages go to stderr.

Exit codes:
  0  success
  1  failure: a server error (5xx) or rate limit that outlasted the retries, a local file
     that cannot be read or written, or a batch that ended failed, expired or cancelled
  2  bad usage or a request the server rejected: bad options or input files, 400, 404,
     409, 413, 422
  3  the server cannot be reached
  4  `wait` timed out (the batch keeps running)
  5  authentication failed (401, 403)
  130 interrupted (Ctrl-C); a submitted batch keeps running on the server
Every failure prints one line, `Error: <reason>`, on stderr; never a traceback.
"""

from __future__ import annotations

import csv
import functools
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from batchgate.sdk import Client
    from batchgate.sdk.types import Batch

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_TIMEOUT = 4
EXIT_AUTH = 5
EXIT_INTERRUPTED = 130

OUTPUT_FORMATS = ("csv", "jsonl", "json")

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """An expected failure: one line on stderr and the given exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it from the instance


# ---- connection, output and errors ------------------------------------------------


@dataclass
class Conn:
    """How to reach the server, and how to print: what every client command gets first."""

    profile: str | None
    base_url: str | None
    api_key: str | None
    as_json: bool
    url: str | None = None  # the server of the last client made, for error messages

    def client(self) -> Client:
        """A client for the profile (if any), with --base-url / --api-key over its values."""
        from batchgate.sdk import Client
        from batchgate.sdk.config import load_profile

        if self.profile is None:
            client = Client(self.base_url, self.api_key)
        else:
            settings = load_profile(self.profile)
            client = Client(self.base_url or settings.base_url, self.api_key or settings.api_key)
        self.url = client.base_url
        return client

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        """`data` as JSON with --json, else what `human` prints."""
        if self.as_json:
            click.echo(json.dumps(plain(data), indent=2, default=str))
        else:
            human()


def client_command(fn: F) -> F:
    """Add the connection and output options, and turn SDK and file errors into exit codes."""

    @functools.wraps(fn)
    def wrapper(
        *args: Any, profile: str | None, base_url: str | None, api_key: str | None, as_json: bool, **kw: Any
    ) -> Any:
        conn = Conn(profile, base_url, api_key, as_json)
        with cli_errors(conn):
            return fn(conn, *args, **kw)

    options = [
        click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout."),
        click.option("--api-key", default=None, help="Default: the profile's, else env BATCHGATE_API_KEY."),
        click.option(
            "--base-url", default=None, help="Default: the profile's, else env BATCHGATE_BASE_URL, else 127.0.0.1:8000."
        ),
        click.option(
            "--profile",
            envvar="BATCHGATE_PROFILE",
            default=None,
            help="A profile of the profiles file (env: BATCHGATE_PROFILE).",
        ),
    ]
    for option in options:
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


@contextmanager
def cli_errors(conn: Conn) -> Iterator[None]:
    """SDK errors, bad files and Ctrl-C as one-line messages with the scheme's exit codes."""
    from batchgate.sdk import errors

    try:
        yield
    except errors.APIConnectionError as exc:
        raise CliError(f"cannot reach {conn.url}: {_describe(exc)}", EXIT_CONNECTION) from None
    except errors.BatchgateError as exc:
        raise CliError(_describe(exc), _exit_code(exc)) from None
    except OSError as exc:
        raise CliError(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted", EXIT_INTERRUPTED) from None


def _exit_code(exc: Exception) -> int:
    from batchgate.sdk import errors

    rejected = (
        errors.ConfigurationError,  # a missing or malformed profile
        errors.BadRequestError,
        errors.NotFoundError,
        errors.ConflictError,
        errors.PayloadTooLargeError,
    )
    if isinstance(exc, errors.WaitTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, errors.AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, rejected):
        return EXIT_USAGE
    return EXIT_FAILURE


def _describe(exc: Exception) -> str:
    message = " ".join(str(getattr(exc, "message", None) or exc).split())
    details = [f"{k} {v}" for k in ("code", "param", "request_id") if (v := getattr(exc, k, None))]
    return f"{message} ({', '.join(details)})" if details else message


def plain(obj: Any) -> Any:
    """SDK results as JSON-able data: the server's dicts as they are, a `Batch` as the
    server's fields, a result object as its fields."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
    return obj


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    table = Table()
    for n, column in enumerate(columns):
        table.add_column(column, no_wrap=n == 0)  # ids stay whole, to copy and paste
    for row in rows:
        table.add_row(*(escape("" if v is None else str(v)) for v in row))
    Console().print(table)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float) or not ts:
        return "" if ts is None else str(ts)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# ---- input helpers -----------------------------------------------------------------


def read_json(path: Path, what: str) -> Any:
    """A JSON file given to an option; bad JSON is a usage error naming the option."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{what}: {path} is not valid JSON ({exc})", EXIT_USAGE) from None


def parse_categories(value: str) -> list[str]:
    """`a,b,c` or a JSON array of strings."""
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"--categories: not a JSON array ({exc})", EXIT_USAGE) from None
        if not isinstance(parsed, list) or not all(isinstance(c, str) for c in parsed):
            raise CliError("--categories: the JSON array must hold strings", EXIT_USAGE)
        categories = [c.strip() for c in parsed]
    else:
        categories = [c.strip() for c in text.split(",")]
    if not categories or not all(categories):
        raise CliError("--categories: give non-empty categories, as a,b,c or a JSON array", EXIT_USAGE)
    return categories


def parse_param(pair: str) -> tuple[str, Any]:
    """`KEY=VALUE`, the value as JSON when it parses, else the string."""
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise CliError(f"--param {pair!r}: expected KEY=VALUE", EXIT_USAGE)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def read_items(path: Path) -> list[Any]:
    """Items for `batches create --items-file`: a JSON array (.json), JSON values one per
    line (.jsonl, .ndjson), or text, one item per non-blank line (any other name), read
    by the parser the server reads uploads with."""
    from batchgate.protocol.records import RecordsError, iter_records

    fmt = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(path.suffix.lower(), "text")
    try:
        with open(path, "rb") as stream:
            return [record.fields for record in iter_records(stream, fmt)]
    except RecordsError as exc:
        raise CliError(f"--items-file: {path}: {exc.message}", EXIT_USAGE) from None


def output_format(path: Path, given: str | None) -> str:
    """--format, else from OUTPUT's suffix (.csv, .json; anything else is JSONL)."""
    if given:
        return given
    return {".csv": "csv", ".json": "json"}.get(path.suffix.lower(), "jsonl")


# ---- waiting and results -------------------------------------------------------------


def write_results(client: Client, batch_id: str, output: Path, fmt: str, review: Path | None) -> tuple[int, int]:
    """Write the batch's rows to `output` in `fmt`; with `review`, failed rows go there as
    JSONL instead. Returns (rows written to output, rows written to review)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if review is None and fmt != "json":
        client.batches.download_output(batch_id, output, format=fmt)
        return _count_rows(output, fmt), 0
    if fmt == "csv":
        return _write_csv_with_review(client, batch_id, output, review)
    kept = sent = 0
    review_file = open(review, "w", encoding="utf-8") if review else None  # noqa: SIM115 - closed below
    try:
        with open(output, "w", encoding="utf-8") as out:
            if fmt == "json":
                out.write("[")
            for row in client.batches.iter_output(batch_id):
                if review_file is not None and row.get("status") != "succeeded":
                    review_file.write(json.dumps(row) + "\n")
                    sent += 1
                    continue
                if fmt == "json":
                    out.write(("," if kept else "") + "\n  " + json.dumps(row))
                else:
                    out.write(json.dumps(row) + "\n")
                kept += 1
            if fmt == "json":
                out.write("\n]\n")
    finally:
        if review_file is not None:
            review_file.close()
    return kept, sent


def _write_csv_with_review(client: Client, batch_id: str, output: Path, review: Path | None) -> tuple[int, int]:
    """The server's CSV (its columns) keeps the succeeded rows; the failed ones, with the
    model's raw text that CSV lacks, go to the review file from the JSON rows. Both come in
    input order, so the n-th CSV record is the n-th JSON row: which column holds the status
    depends on the input's own columns, the JSON row's status does not."""
    assert review is not None
    kept = sent = 0
    with tempfile.TemporaryDirectory(prefix="batchgate-") as tmp:
        full = Path(tmp) / "output.csv"
        client.batches.download_output(batch_id, full, format="csv")
        with (
            open(full, newline="", encoding="utf-8") as src,
            open(output, "w", newline="", encoding="utf-8") as dst,
            open(review, "w", encoding="utf-8") as out,
        ):
            reader, writer = csv.reader(src), csv.writer(dst)
            header = next(reader, None)
            if header is not None:
                writer.writerow(header)
            for record, row in zip(reader, client.batches.iter_output(batch_id), strict=True):
                if row["status"] == "succeeded":
                    writer.writerow(record)
                    kept += 1
                else:
                    out.write(json.dumps(row) + "\n")
                    sent += 1
    return kept, sent


def _count_rows(path: Path, fmt: str) -> int:
    if fmt == "csv":  # quoted cells may span lines
        with open(path, newline="", encoding="utf-8") as f:
            return max(sum(1 for _ in csv.reader(f)) - 1, 0)
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _ended(batch: Batch) -> None:
    """A batch that ended without completing is a failure of the command."""
    if batch.status != "completed":
        raise CliError(f"batch {batch.id} ended {batch.status}", EXIT_FAILURE)


# ---- files ---------------------------------------------------------------------------


@click.group()
def files() -> None:
    """Files on the server (/v1/files)."""


def _file_rows(items: list[Any]) -> None:
    rows = [
        [f.get("id"), f.get("filename"), f.get("purpose"), f.get("bytes"), _when(f.get("created_at"))] for f in items
    ]
    _table(["id", "filename", "purpose", "bytes", "created"], rows)


@files.command("upload")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--purpose", default="batch", show_default=True)
@client_command
def files_upload(conn: Conn, path: Path, purpose: str) -> None:
    """Upload a file (a batch input file, JSONL)."""
    with conn.client() as client:
        file = client.files.upload(path, purpose=purpose)
    conn.emit(file, lambda: click.echo(file.get("id")))


@files.command("list")
@client_command
def files_list(conn: Conn) -> None:
    """The project's files, newest first."""
    with conn.client() as client:
        items = client.files.list()
    conn.emit(items, lambda: _file_rows(items))


@files.command("show")
@click.argument("file_id")
@client_command
def files_show(conn: Conn, file_id: str) -> None:
    """One file's metadata."""
    with conn.client() as client:
        file = client.files.retrieve(file_id)
    conn.emit(file, lambda: _file_rows([file]))


@files.command("download")
@click.argument("file_id")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True)
@client_command
def files_download(conn: Conn, file_id: str, output: Path) -> None:
    """Save a file's content (an input, output or error file)."""
    with conn.client() as client:
        client.files.download(file_id, output)
    size = output.stat().st_size
    conn.emit(
        {"id": file_id, "path": str(output), "bytes": size},
        lambda: click.echo(f"{file_id} → {output} ({size:,} bytes)", err=True),
    )


@files.command("delete")
@click.argument("file_id")
@client_command
def files_delete(conn: Conn, file_id: str) -> None:
    """Delete a file."""
    with conn.client() as client:
        result = client.files.delete(file_id)
    conn.emit(result, lambda: click.echo(f"deleted {file_id}", err=True))


# ---- operation batches -----------------------------------------------------------------


@click.group()
def batches() -> None:
    """Operation batches (/api/batches): create, follow, cancel, download results."""


def _batch_rows(items: list[Any]) -> None:
    rows = [
        [
            b.id,
            b.operation,
            b.model,
            b.status,
            f"{b.completed_items + b.failed_items}/{b.total_items}",
            b.failed_items,
        ]
        for b in items
    ]
    _table(["id", "operation", "model", "status", "done", "failed"], rows)


@batches.command("create")
@click.option(
    "--operation",
    required=True,
    help="label (or classify), summarize, extract, enrich, run, or any other name: a custom run.",
)
@click.option(
    "--items-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Items: .json array, .jsonl, or text lines.",
)
@click.option(
    "--records",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A CSV/JSONL/JSON/text file of records, uploaded and parsed by the server.",
)
@click.option("--file-id", default=None, help="A records file already uploaded (`files upload`).")
@click.option(
    "--params",
    "params_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Parameters, a JSON object.",
)
@click.option("-p", "--param", "pairs", multiple=True, help="KEY=VALUE (VALUE as JSON when it parses); repeatable.")
@click.option("--content-column", default=None, help="With --records or --file-id: the column holding the text.")
@click.option("--completion-window", default=None, help="e.g. 24h (the default), 72h.")
@client_command
def batches_create(
    conn: Conn,
    operation: str,
    items_file: Path | None,
    records: Path | None,
    file_id: str | None,
    params_file: Path | None,
    pairs: tuple[str, ...],
    content_column: str | None,
    completion_window: str | None,
) -> None:
    """Submit an operation batch over an items file, a records file or an uploaded file;
    prints its id. Parameters come from --params and -p KEY=VALUE."""
    if sum(source is not None for source in (items_file, records, file_id)) != 1:
        raise CliError("give exactly one of --items-file, --records or --file-id", EXIT_USAGE)
    params: dict[str, Any] = {}
    if params_file is not None:
        params = read_json(params_file, "--params")
        if not isinstance(params, dict):
            raise CliError("--params: the file must hold a JSON object", EXIT_USAGE)
    params.update(parse_param(p) for p in pairs)
    if completion_window:
        params["completion_window"] = completion_window
    if content_column:
        params["content_column"] = content_column
    items = read_items(items_file) if items_file is not None else None
    with conn.client() as client:
        if records is not None:
            batch = client.batches.upload_file(records, operation=operation, **params)
        else:
            batch = client.batches.submit(operation, items, file_id=file_id, **params)
    conn.emit(batch, lambda: click.echo(batch.id))


@batches.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@client_command
def batches_list(conn: Conn, limit: int) -> None:
    """The project's operation batches, newest first."""
    with conn.client() as client:
        items = client.batches.list(limit=limit)
    conn.emit(items, lambda: _batch_rows(items))


@batches.command("show")
@click.argument("batch_id")
@client_command
def batches_show(conn: Conn, batch_id: str) -> None:
    """One batch: status, progress, usage."""
    with conn.client() as client:
        batch = client.batches.retrieve(batch_id)
    conn.emit(batch, lambda: _batch_rows([batch]))


@batches.command("wait")
@click.argument("batch_id")
@click.option("--timeout", type=float, default=None, help="Seconds; exit 4 if the batch is still running then.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True)
@client_command
def batches_wait(conn: Conn, batch_id: str, timeout: float | None, poll_interval: float) -> None:
    """Wait until the batch ends; exit 1 if it ended failed, expired or cancelled."""
    with conn.client() as client:
        batch = client.batches.wait(batch_id, timeout=timeout, poll_interval=poll_interval)
    conn.emit(batch, lambda: _batch_rows([batch]))
    _ended(batch)


@batches.command("cancel")
@click.argument("batch_id")
@client_command
def batches_cancel(conn: Conn, batch_id: str) -> None:
    """Cancel a batch; results already produced are kept."""
    with conn.client() as client:
        batch = client.batches.cancel(batch_id)
    conn.emit(batch, lambda: _batch_rows([batch]))


@batches.command("download")
@click.argument("batch_id")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None, help="Default: from OUTPUT's suffix.")
@click.option(
    "--review", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Failed rows go here (JSONL)."
)
@client_command
def batches_download(conn: Conn, batch_id: str, output: Path, fmt: str | None, review: Path | None) -> None:
    """Save an ended batch's rows (CSV, JSONL, or a JSON array)."""
    fmt = output_format(output, fmt)
    with conn.client() as client:
        kept, sent = write_results(client, batch_id, output, fmt, review)
    _report(conn, None, output, fmt, review, kept, sent)


def _report(conn: Conn, batch: Any, output: Path, fmt: str, review: Path | None, kept: int, sent: int) -> None:
    summary: dict[str, Any] = {"output": str(output), "format": fmt, "rows": kept}
    if review is not None:
        summary.update(review=str(review), review_rows=sent)
    if batch is not None:
        summary = {"batch": plain(batch), **summary}
    line = f"{kept} rows → {output}" + (f", {sent} failed rows → {review}" if review is not None else "")
    if batch is not None:
        line = f"{batch.id} {batch.status}: {line}"
    conn.emit(summary, lambda: click.echo(line))


# ---- operations over a records file --------------------------------------------------


def operation_command(
    kind: str, *extra: Callable[[F], F], name: str | None = None
) -> Callable[[Callable[..., dict[str, Any]]], click.Command]:
    """The command of operation `kind`: INPUT -o OUTPUT plus the common options. The decorated
    function turns the command's own options (`extra`) into the operation's parameters; its
    docstring is the command's help."""

    def decorate(params_of: Callable[..., dict[str, Any]]) -> click.Command:
        @click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path, dir_okay=False, exists=True))
        @click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True)
        @click.option(
            "--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None, help="Default: from OUTPUT's suffix."
        )
        @click.option(
            "--review",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Failed rows go here (JSONL).",
        )
        @click.option("--model", default=None, help="Model name (default: the server's default).")
        @click.option("--content-column", default=None, help="CSV/JSON column holding the text (default: content).")
        @click.option("--input-format", type=click.Choice(["csv", "jsonl", "json", "text"]), default=None)
        @click.option("--temperature", type=float, default=None)
        @click.option("--max-tokens", type=int, default=None)
        @click.option("--timeout", type=float, default=None, help="Seconds to wait; exit 4 if still running then.")
        @click.option("--poll-interval", type=float, default=1.0, show_default=True)
        @client_command
        @functools.wraps(params_of)
        def command(
            conn: Conn,
            input_file: Path,
            output: Path,
            fmt: str | None,
            review: Path | None,
            model: str | None,
            content_column: str | None,
            input_format: str | None,
            temperature: float | None,
            max_tokens: int | None,
            timeout: float | None,
            poll_interval: float,
            **own: Any,
        ) -> None:
            common = {
                "model": model,
                "content_column": content_column,
                "format": input_format,
                "temperature": temperature,
                "max_tokens": max_tokens,
            }
            params = {k: v for k, v in {**common, **params_of(**own)}.items() if v is not None}
            out_fmt = output_format(output, fmt)
            with conn.client() as client:
                batch = client.batches.upload_file(input_file, operation=kind, **params)
                if not conn.as_json:
                    click.echo(f"{kind}: batch {batch.id}, {batch.total_items} items", err=True)
                try:
                    batch = client.batches.wait(batch.id, timeout=timeout, poll_interval=poll_interval)
                except KeyboardInterrupt:
                    raise CliError(
                        f"interrupted; batch {batch.id} keeps running (batchgate batches wait {batch.id})",
                        EXIT_INTERRUPTED,
                    ) from None
                kept, sent = write_results(client, batch.id, output, out_fmt, review)
            _report(conn, batch, output, out_fmt, review, kept, sent)
            _ended(batch)

        for option in reversed(extra):
            command = option(command)
        return click.command(name or kind)(command)

    return decorate


def _json_file_option(name: str, help_text: str, required: bool = False) -> Callable[[F], F]:
    return click.option(
        name, type=click.Path(path_type=Path, dir_okay=False, exists=True), required=required, help=help_text
    )


@operation_command(
    "label",
    click.option("--categories", required=True, help="a,b,c or a JSON array."),
    click.option("--multi-label", is_flag=True, help="Any number of the categories per record."),
)
def label(categories: str, multi_label: bool) -> dict[str, Any]:
    """Label each record of INPUT with one of the categories (several with --multi-label) and
    the model's confidence; results to OUTPUT."""
    return {"categories": parse_categories(categories), "multi_label": multi_label or None}


@operation_command(
    "extract",
    click.option("--instructions", required=True, help="What to extract."),
    _json_file_option("--schema", "A JSON Schema file the result must match."),
)
def extract(instructions: str, schema: Path | None) -> dict[str, Any]:
    """Extract a JSON object from each record of INPUT (matching --schema when given)."""
    return {"extraction_instructions": instructions, "schema": read_json(schema, "--schema") if schema else None}


@operation_command(
    "summarize",
    click.option("--instructions", default=None, help="How to summarize."),
    click.option("--json-object", is_flag=True, help="Ask for a JSON object instead of text."),
)
def summarize(instructions: str | None, json_object: bool) -> dict[str, Any]:
    """Summarize each record of INPUT."""
    return {"summary_instructions": instructions, "response_format": {"type": "json_object"} if json_object else None}


@operation_command(
    "enrich",
    _json_file_option("--fields", "The fields, a JSON array of {name, type, description, ...}.", required=True),
    _json_file_option("--runtime-categories", "A JSON object {field: [values]} overriding valid_values."),
    click.option("--include-context", is_flag=True, help="Put each record's other columns into the prompt."),
)
def enrich(fields: Path, runtime_categories: Path | None, include_context: bool) -> dict[str, Any]:
    """Add the --fields, typed, to each record of INPUT."""
    categories = read_json(runtime_categories, "--runtime-categories") if runtime_categories else None
    return {
        "fields": read_json(fields, "--fields"),
        "runtime_categories": categories,
        "include_context": include_context or None,
    }


@operation_command(
    "run",
    click.option("--user-prompt-template", required=True, help="e.g. 'Translate to French: {content}'."),
    click.option("--system-prompt", default=None),
    click.option("--json-object", is_flag=True, help="Ask for a JSON object instead of text."),
    name="run-prompt",  # `batchgate run` is the offline batch run
)
def run_prompt(user_prompt_template: str, system_prompt: str | None, json_object: bool) -> dict[str, Any]:
    """The `run` operation: your own prompt on each record of INPUT ({content} and
    {column} placeholders)."""
    return {
        "user_prompt_template": user_prompt_template,
        "system_prompt": system_prompt,
        "response_format": {"type": "json_object"} if json_object else None,
    }


# ---- prompts ---------------------------------------------------------------------------


@click.group()
def prompts() -> None:
    """Prompt templates (/v1/prompts)."""


def _prompt_rows(items: list[Any]) -> None:
    rows = [[p.get("slug"), p.get("name"), p.get("published_version"), _when(p.get("created_at"))] for p in items]
    _table(["slug", "name", "published", "created"], rows)


def _version_rows(items: list[Any]) -> None:
    rows = [
        [
            v.get("version"),
            ", ".join(v.get("variables") or []),
            len(v.get("messages") or []),
            _when(v.get("created_at")),
        ]
        for v in items
    ]
    _table(["version", "variables", "messages", "created"], rows)


@prompts.command("list")
@client_command
def prompts_list(conn: Conn) -> None:
    """The project's prompts."""
    with conn.client() as client:
        items = client.prompts.list()
    conn.emit(items, lambda: _prompt_rows(items))


@prompts.command("show")
@click.argument("slug")
@client_command
def prompts_show(conn: Conn, slug: str) -> None:
    """A prompt with its published version."""
    with conn.client() as client:
        prompt = client.prompts.retrieve(slug)

    def human() -> None:
        _prompt_rows([prompt])
        published = prompt.get("published")
        if published:
            click.echo(json.dumps(published.get("messages"), indent=2))

    conn.emit(prompt, human)


@prompts.command("create")
@click.argument("slug")
@_json_file_option("--messages", "The messages, a JSON array with {{variable}} placeholders.")
@_json_file_option("--model-config", "Request defaults, a JSON object (model, temperature, ...).")
@click.option("--name", default=None)
@click.option("--description", default=None)
@client_command
def prompts_create(
    conn: Conn, slug: str, messages: Path | None, model_config: Path | None, name: str | None, description: str | None
) -> None:
    """Create a prompt; with --messages, version 1 is created and published."""
    params: dict[str, Any] = {"name": name, "description": description}
    if messages is not None:
        params["messages"] = read_json(messages, "--messages")
    if model_config is not None:
        params["model_config"] = read_json(model_config, "--model-config")
    with conn.client() as client:
        prompt = client.prompts.create(slug, **{k: v for k, v in params.items() if v is not None})
    conn.emit(prompt, lambda: _prompt_rows([prompt]))


@prompts.command("add-version")
@click.argument("slug")
@_json_file_option("--messages", "The messages, a JSON array with {{variable}} placeholders.", required=True)
@_json_file_option("--model-config", "Request defaults, a JSON object.")
@click.option("--publish", is_flag=True, help="Make it the published version.")
@client_command
def prompts_add_version(conn: Conn, slug: str, messages: Path, model_config: Path | None, publish: bool) -> None:
    """Add the next version of a prompt."""
    config = read_json(model_config, "--model-config") if model_config else None
    with conn.client() as client:
        version = client.prompts.create_version(
            slug, messages=read_json(messages, "--messages"), model_config=config, publish=publish
        )
    conn.emit(version, lambda: _version_rows([version]))


@prompts.command("versions")
@click.argument("slug")
@client_command
def prompts_versions(conn: Conn, slug: str) -> None:
    """A prompt's versions with the variables each uses."""
    with conn.client() as client:
        items = client.prompts.versions(slug)
    conn.emit(items, lambda: _version_rows(items))


@prompts.command("publish")
@click.argument("slug")
@click.argument("version", type=int)
@client_command
def prompts_publish(conn: Conn, slug: str, version: int) -> None:
    """Make VERSION the published version."""
    with conn.client() as client:
        prompt = client.prompts.publish(slug, version)
    conn.emit(prompt, lambda: _prompt_rows([prompt]))


@prompts.command("jsonl")
@click.argument("slug")
@_json_file_option("--variables", "A JSON array of variable sets, one batch line each.", required=True)
@click.option("--version", type=int, default=None, help="Default: the published version.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Default: stdout.")
@client_command
def prompts_jsonl(conn: Conn, slug: str, variables: Path, version: int | None, output: Path | None) -> None:
    """A batch input file (JSONL) running the prompt once per variable set."""
    sets = read_json(variables, "--variables")
    with conn.client() as client:
        text = client.prompts.jsonl(slug, sets, version=version)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    lines = sum(1 for line in text.splitlines() if line.strip())
    conn.emit({"output": str(output), "lines": lines}, lambda: click.echo(f"{lines} lines → {output}", err=True))


COMMANDS: list[click.Command] = [files, batches, prompts, label, extract, summarize, enrich, run_prompt]
"""The client commands, registered on the `batchgate` group by batchgate.cli.main."""
