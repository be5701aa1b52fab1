"""`Client`: the synchronous batchgate client."""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from batchgate.sdk._core import SyncDriver
from batchgate.sdk._ops import Ops
from batchgate.sdk.agents import Agent, Swarm
from batchgate.sdk.config import Settings, load_profile, resolve
from batchgate.sdk.jobs import Source, run_job
from batchgate.sdk.scheduling import Scheduling
from batchgate.sdk.types import Batch, CompletionResult, OutputPage, Row
from batchgate.sdk.webhooks import Webhooks

PathLike = str | os.PathLike[str]


def http_options(settings: Settings, timeout: float) -> dict[str, Any]:
    """What both clients give their httpx client."""
    from batchgate import __version__

    headers = {"User-Agent": f"batchgate-python/{__version__}"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    return {"base_url": settings.base_url, "headers": headers, "timeout": timeout}


class _Resource:
    def __init__(self, driver: SyncDriver, ops: Ops):
        self._driver, self._ops = driver, ops


class Completions(_Resource):
    """Operations run now, on up to 50 items per call (`POST /api/completions/{operation}`).

    Each method returns a `CompletionResult`: `.results` holds one row per item, in order,
    `{"index", "id", "operation", "status": "succeeded"|"failed", "result", "error",
    "model", "metadata", "raw"}` (`raw`: the model's text on a row whose answer did not
    parse; `metadata`: the item's fields, its content included), and `.model` the model
    that answered; iterating over it yields the rows. Items are strings or `{"content",
    "metadata"}` objects. Common parameters: `model`, `temperature`, `max_tokens`,
    `system_prompt`, `user_prompt_template`. More than 50 items raises
    `PayloadTooLargeError`: use batches.
    """

    def classify(
        self, items: Sequence[Any], categories: Sequence[str], multi_label: bool = False, **params: Any
    ) -> CompletionResult:
        """Label each item with one of `categories` (or several, with `multi_label`):
        `row["result"]` is `{"label", "confidence"}` (`{"labels", "confidence"}`)."""
        return self.run("label", items, categories=list(categories), multi_label=multi_label, **params)

    def extract(
        self, items: Sequence[Any], extraction_instructions: str, schema: dict[str, Any] | None = None, **params: Any
    ) -> CompletionResult:
        """Extract one JSON object per item, following `extraction_instructions` and, when
        given, the JSON Schema `schema` (enforced)."""
        return self.run("extract", items, extraction_instructions=extraction_instructions, schema=schema, **params)

    def summarize(self, items: Sequence[Any], **params: Any) -> CompletionResult:
        """Summarise each item (`summary_instructions`, `response_format` for JSON)."""
        return self.run("summarize", items, **params)

    def enrich(self, items: Sequence[Any], fields: Sequence[dict[str, Any]], **params: Any) -> CompletionResult:
        """Fill `fields` (`{name, type, description, valid_values?, examples?}`) for each item."""
        return self.run("enrich", items, fields=list(fields), **params)

    def run(self, operation: str = "run", items: Sequence[Any] = (), **params: Any) -> CompletionResult:
        """An operation by name (label or classify, summarize, extract, enrich, run) with its
        parameters; any other name (`feedback_analysis`) is a custom run of that name: a
        `user_prompt_template`, optional `system_prompt` and `response_format`, and the
        name recorded on its rows."""
        return self._driver.run(self._ops.complete(operation, items, params))


class Batches(_Resource):
    """Operation batches (`/api/batches`): any number of items, run in the background."""

    def submit(self, operation: str, items: Sequence[Any] | None = None, **params: Any) -> Batch:
        """Create an operation batch over `items` (or `file_id=` of a file uploaded to
        `/v1/files`), with the operation's parameters and optionally `completion_window`
        and `metadata`. Returns the queued `Batch`."""
        return self._driver.run(self._ops.submit(operation, items, params))

    def submit_and_wait(
        self,
        operation: str,
        items: Sequence[Any] | None = None,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool | None = None,
        **params: Any,
    ) -> Batch:
        """`submit`, then `wait`: returns the ended `Batch` (read its rows with `output` or
        `iter_output`). A progress bar shows on a terminal unless `progress=False`."""
        return self._driver.run(self._ops.submit_and_wait(operation, items, params, timeout, poll_interval, progress))

    def retrieve(self, batch_id: str) -> Batch:
        """The batch's current status, counts, progress and usage."""
        return self._driver.run(self._ops.retrieve(batch_id))

    def wait(
        self, batch_id: str, timeout: float | None = None, poll_interval: float = 1.0, progress: bool | None = None
    ) -> Batch:
        """Poll until the batch ends (completed, failed, expired or cancelled) and return it.

        Polls every `poll_interval` seconds, backing off to every 10 s; raises
        `WaitTimeoutError` after `timeout` seconds (the batch keeps running). A progress bar
        shows on stderr when it is a terminal; `progress=True`/`False` forces it on/off.
        """
        return self._driver.run(self._ops.wait(batch_id, timeout, poll_interval, progress))

    def output(
        self, batch_id: str, format: str = "json", offset: int = 0, limit: int | None = None
    ) -> OutputPage | str:
        """An ended batch's rows from `offset`: for `format="json"` one `OutputPage` (`.id`,
        `.status`, `.offset`, `.limit`, `.total`, `.results`) of up to `limit` rows (at most
        and by default 10,000); for `"jsonl"` or `"csv"` the text, to the end unless `limit`.
        `ConflictError` while the batch runs."""
        return self._driver.run(self._ops.output(batch_id, format, offset, limit))

    def iter_output(self, batch_id: str, page_size: int = 1000) -> Iterator[Row]:
        """Every row of an ended batch, fetched `page_size` rows at a time: memory stays at
        one page whatever the batch size."""
        return self._driver.iterate(self._ops.iter_output(batch_id, page_size))

    def download_output(
        self, batch_id: str, path: PathLike, format: str = "jsonl", progress: bool | None = None
    ) -> Path:
        """Stream an ended batch's output (`jsonl` or `csv`, or `json`) to `path`; memory stays
        flat and `path` appears only once complete. Returns `path`."""
        return self._driver.run(self._ops.download_output(batch_id, Path(path), format, progress))

    def upload_file(self, path: PathLike, operation: str, **params: Any) -> Batch:
        """Upload a CSV / JSON / JSONL / text file of records (`POST /api/files`) and start an
        operation batch over it. `content_column` names the CSV column or JSON key holding
        the content; `format` overrides the file extension. `Batch.file_id` is the upload."""
        return self._driver.run(self._ops.upload_records(Path(path), operation, params))

    def cancel(self, batch_id: str) -> Batch:
        """Cancel a queued or running batch; results already produced are kept."""
        return self._driver.run(self._ops.cancel(batch_id))

    def list(self, limit: int = 20, after: str | None = None) -> builtins.list[Batch]:
        """Operation batches, newest first; `after` is the last id of the previous page."""
        return self._driver.run(self._ops.list_batches(limit, after))

    def pause(self, batch_id: str) -> dict[str, Any]:
        """Pause any batch (`POST /v1/batches/{id}/pause`, an extension): no new line of it
        starts; it keeps its status and window. Returns the /v1 Batch object (`paused_at` set)."""
        return self._driver.run(self._ops.batch_action(batch_id, "pause"))

    def resume(self, batch_id: str) -> dict[str, Any]:
        """Resume a paused batch (`POST /v1/batches/{id}/resume`); the /v1 Batch object."""
        return self._driver.run(self._ops.batch_action(batch_id, "resume"))

    def retry(self, batch_id: str) -> dict[str, Any]:
        """A new batch of the failed lines of a finished /v1/batches batch (`POST
        /v1/batches/{id}/retry`, an extension); the new /v1 Batch object (`metadata.retry_of`)."""
        return self._driver.run(self._ops.batch_action(batch_id, "retry"))


class Files(_Resource):
    """OpenAI-compatible files (`/v1/files`); objects are the server's JSON dicts."""

    def upload(self, file: PathLike | bytes, purpose: str = "batch", filename: str | None = None) -> dict[str, Any]:
        """Upload a path (streamed from disk) or bytes; returns the File object."""
        source = file if isinstance(file, bytes) else Path(file)
        return self._driver.run(self._ops.upload_file(source, purpose, filename))

    def list(self, purpose: str | None = None) -> builtins.list[dict[str, Any]]:
        """The project's files, newest first."""
        return self._driver.run(self._ops.list_files(purpose))

    def retrieve(self, file_id: str) -> dict[str, Any]:
        """One File object."""
        return self._driver.run(self._ops.retrieve_file(file_id))

    def content(self, file_id: str) -> bytes:
        """The file's bytes, in memory (use `download` for large files)."""
        return self._driver.run(self._ops.file_content(file_id))

    def download(self, file_id: str, path: PathLike, progress: bool | None = None) -> Path:
        """Stream the file's bytes to `path`; returns `path`."""
        return self._driver.run(self._ops.download_file(file_id, Path(path), progress))

    def delete(self, file_id: str) -> dict[str, Any]:
        """Delete the file (`ConflictError` while an unfinished batch reads it)."""
        return self._driver.run(self._ops.delete_file(file_id))


class Prompts(_Resource):
    """Prompt templates (`/v1/prompts`): messages with `{{variables}}`, versioned."""

    def create(
        self,
        slug: str,
        *,
        name: str | None = None,
        description: str | None = None,
        messages: Sequence[dict[str, Any]] | None = None,
        model_config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a prompt; with `messages`, version 1 is created and published."""
        body: dict[str, Any] = {"slug": slug, "name": name, "description": description}
        body.update(messages=list(messages) if messages is not None else None, model_config=model_config)
        return self._driver.run(self._ops.create_prompt(body))

    def list(self) -> builtins.list[dict[str, Any]]:
        """The project's prompts."""
        return self._driver.run(self._ops.list_prompts())

    def retrieve(self, slug: str) -> dict[str, Any]:
        """One prompt, with its published version under `published`."""
        return self._driver.run(self._ops.retrieve_prompt(slug))

    def create_version(
        self,
        slug: str,
        messages: Sequence[dict[str, Any]],
        model_config: dict[str, Any] | None = None,
        publish: bool = False,
    ) -> dict[str, Any]:
        """Add the next version (published at once with `publish=True`)."""
        body = {"messages": list(messages), "model_config": model_config, "publish": publish}
        return self._driver.run(self._ops.create_version(slug, body))

    def versions(self, slug: str) -> builtins.list[dict[str, Any]]:
        """Every version, with the variables each uses."""
        return self._driver.run(self._ops.prompt_versions(slug))

    def publish(self, slug: str, version: int) -> dict[str, Any]:
        """Make `version` the published one; returns the prompt."""
        return self._driver.run(self._ops.publish(slug, version))

    def jsonl(self, slug: str, variables: Sequence[dict[str, Any]], version: int | None = None) -> str:
        """A batch input file (JSONL text) running the prompt once per variable set."""
        return self._driver.run(self._ops.prompt_jsonl(slug, variables, version))


class Jobs(_Resource):
    """Chunked jobs over more records than one batch should hold; see `batchgate.sdk.jobs`."""

    def run(
        self,
        records: Sequence[Any] | PathLike,
        operation: str,
        *,
        chunk_size: int = 1000,
        manifest: PathLike = "job.json",
        content_column: str | None = None,
        format: str | None = None,
        poll_interval: float = 1.0,
        progress: bool | None = None,
        **params: Any,
    ) -> Iterator[tuple[int, builtins.list[Row]]]:
        """Run `operation` over `records` (a list of items, or the path of a CSV / JSONL /
        JSON / text file, read locally and streamed: `content_column` and `format` as for
        `Batches.upload_file`) in batches of `chunk_size`, and yield `(chunk_index, rows)` per
        chunk, in order, as each batch ends. Every row gains `chunk` and a job-wide
        `custom_id` = f"{chunk}-{index}".

        Submission is lazy: nothing happens until the iteration starts. Each chunk's batch id
        is written durably to `manifest` before the next chunk is submitted; running again
        with the same manifest after a crash re-polls the recorded batches instead of
        submitting again, and yields every chunk again (including ones already yielded). A
        manifest written for other records or parameters raises `JobManifestError`.
        """
        source = Source(records, format, content_column)
        op = run_job(self._ops, source, operation, chunk_size, Path(manifest), params, poll_interval, progress)
        return self._driver.iterate(op)


class Client:
    """The synchronous batchgate client.

    `base_url` and `api_key` default to `BATCHGATE_BASE_URL` / `BATCHGATE_API_KEY`, then to
    http://127.0.0.1:8000 and no key; `Client.from_profile(name)` reads them from the
    profiles file instead. Transient failures (429, 5xx, connection errors) are retried up
    to `max_retries` times. `transport` replaces httpx's (e.g. `httpx.MockTransport` in tests).
    Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        settings = resolve(base_url, api_key)
        self.base_url, self.api_key = settings.base_url, settings.api_key
        self._http = httpx.Client(transport=transport, **http_options(settings, timeout))
        driver, ops = SyncDriver(self._http), Ops(max_retries)
        self.completions = Completions(driver, ops)
        self.batches = Batches(driver, ops)
        self.files = Files(driver, ops)
        self.prompts = Prompts(driver, ops)
        self.jobs = Jobs(driver, ops)
        self.agent = Agent(driver, max_retries)  # the Swarms-compatible agent API
        self.swarm = Swarm(driver, max_retries)
        self.webhooks = Webhooks(driver, max_retries)
        self.scheduling = Scheduling(driver, max_retries)

    @classmethod
    def from_profile(cls, name: str, **kwargs: Any) -> Self:
        """A client for profile `name` of the profiles file (see `batchgate.sdk.config`), with
        the profile's `timeout` when it sets one and `kwargs` do not."""
        settings = load_profile(name)
        if settings.timeout is not None:
            kwargs.setdefault("timeout", settings.timeout)
        return cls(settings.base_url, settings.api_key, **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"
