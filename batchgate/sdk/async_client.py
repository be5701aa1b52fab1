"""`AsyncClient`: the asyncio batchgate client, with the same surface as `Client`.

Every method runs the same operation as its `Client` counterpart (see `_ops`), driven
with `httpx.AsyncClient` and `asyncio.sleep`; the docstrings of `Client`'s resources apply.
Chunked jobs read local files with blocking I/O between requests (a chunk at a time).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from batchgate.sdk._core import AsyncDriver
from batchgate.sdk._ops import Ops
from batchgate.sdk.agents import AsyncAgent, AsyncSwarm
from batchgate.sdk.client import PathLike, http_options
from batchgate.sdk.config import load_profile, resolve
from batchgate.sdk.jobs import Source, run_job
from batchgate.sdk.scheduling import AsyncScheduling
from batchgate.sdk.types import Batch, CompletionResult, OutputPage, Row
from batchgate.sdk.webhooks import AsyncWebhooks


class _AsyncResource:
    def __init__(self, driver: AsyncDriver, ops: Ops):
        self._driver, self._ops = driver, ops


class AsyncCompletions(_AsyncResource):
    """See `batchgate.sdk.client.Completions`."""

    async def classify(
        self, items: Sequence[Any], categories: Sequence[str], multi_label: bool = False, **params: Any
    ) -> CompletionResult:
        """Label each item: `row["result"]` is `{"label", "confidence"}`."""
        return await self.run("label", items, categories=list(categories), multi_label=multi_label, **params)

    async def extract(
        self, items: Sequence[Any], extraction_instructions: str, schema: dict[str, Any] | None = None, **params: Any
    ) -> CompletionResult:
        """Extract one JSON object per item."""
        return await self.run(
            "extract", items, extraction_instructions=extraction_instructions, schema=schema, **params
        )

    async def summarize(self, items: Sequence[Any], **params: Any) -> CompletionResult:
        """Summarise each item."""
        return await self.run("summarize", items, **params)

    async def enrich(self, items: Sequence[Any], fields: Sequence[dict[str, Any]], **params: Any) -> CompletionResult:
        """Fill `fields` for each item."""
        return await self.run("enrich", items, fields=list(fields), **params)

    async def run(self, operation: str = "run", items: Sequence[Any] = (), **params: Any) -> CompletionResult:
        """An operation by name; any other name is a custom run of that name."""
        return await self._driver.run(self._ops.complete(operation, items, params))


class AsyncBatches(_AsyncResource):
    """See `batchgate.sdk.client.Batches`."""

    async def submit(self, operation: str, items: Sequence[Any] | None = None, **params: Any) -> Batch:
        """Create an operation batch."""
        return await self._driver.run(self._ops.submit(operation, items, params))

    async def submit_and_wait(
        self,
        operation: str,
        items: Sequence[Any] | None = None,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool | None = None,
        **params: Any,
    ) -> Batch:
        """`submit`, then `wait`."""
        return await self._driver.run(
            self._ops.submit_and_wait(operation, items, params, timeout, poll_interval, progress)
        )

    async def retrieve(self, batch_id: str) -> Batch:
        """The batch's current status."""
        return await self._driver.run(self._ops.retrieve(batch_id))

    async def wait(
        self, batch_id: str, timeout: float | None = None, poll_interval: float = 1.0, progress: bool | None = None
    ) -> Batch:
        """Poll until the batch ends; `WaitTimeoutError` after `timeout` seconds."""
        return await self._driver.run(self._ops.wait(batch_id, timeout, poll_interval, progress))

    async def output(
        self, batch_id: str, format: str = "json", offset: int = 0, limit: int | None = None
    ) -> OutputPage | str:
        """One `OutputPage` (json) or the text (jsonl, csv) of an ended batch."""
        return await self._driver.run(self._ops.output(batch_id, format, offset, limit))

    def iter_output(self, batch_id: str, page_size: int = 1000) -> AsyncIterator[Row]:
        """Every row of an ended batch, a page at a time (`async for`)."""
        return self._driver.iterate(self._ops.iter_output(batch_id, page_size))

    async def download_output(
        self, batch_id: str, path: PathLike, format: str = "jsonl", progress: bool | None = None
    ) -> Path:
        """Stream an ended batch's output to `path`."""
        return await self._driver.run(self._ops.download_output(batch_id, Path(path), format, progress))

    async def upload_file(self, path: PathLike, operation: str, **params: Any) -> Batch:
        """Upload a file of records and start an operation batch over it."""
        return await self._driver.run(self._ops.upload_records(Path(path), operation, params))

    async def cancel(self, batch_id: str) -> Batch:
        """Cancel a queued or running batch."""
        return await self._driver.run(self._ops.cancel(batch_id))

    async def list(self, limit: int = 20, after: str | None = None) -> builtins.list[Batch]:
        """Operation batches, newest first."""
        return await self._driver.run(self._ops.list_batches(limit, after))

    async def pause(self, batch_id: str) -> dict[str, Any]:
        """See `batchgate.sdk.client.Batches.pause`."""
        return await self._driver.run(self._ops.batch_action(batch_id, "pause"))

    async def resume(self, batch_id: str) -> dict[str, Any]:
        """See `batchgate.sdk.client.Batches.resume`."""
        return await self._driver.run(self._ops.batch_action(batch_id, "resume"))

    async def retry(self, batch_id: str) -> dict[str, Any]:
        """See `batchgate.sdk.client.Batches.retry`."""
        return await self._driver.run(self._ops.batch_action(batch_id, "retry"))


class AsyncFiles(_AsyncResource):
    """See `batchgate.sdk.client.Files`."""

    async def upload(
        self, file: PathLike | bytes, purpose: str = "batch", filename: str | None = None
    ) -> dict[str, Any]:
        """Upload a path or bytes."""
        source = file if isinstance(file, bytes) else Path(file)
        return await self._driver.run(self._ops.upload_file(source, purpose, filename))

    async def list(self, purpose: str | None = None) -> builtins.list[dict[str, Any]]:
        """The project's files."""
        return await self._driver.run(self._ops.list_files(purpose))

    async def retrieve(self, file_id: str) -> dict[str, Any]:
        """One File object."""
        return await self._driver.run(self._ops.retrieve_file(file_id))

    async def content(self, file_id: str) -> bytes:
        """The file's bytes."""
        return await self._driver.run(self._ops.file_content(file_id))

    async def download(self, file_id: str, path: PathLike, progress: bool | None = None) -> Path:
        """Stream the file to `path`."""
        return await self._driver.run(self._ops.download_file(file_id, Path(path), progress))

    async def delete(self, file_id: str) -> dict[str, Any]:
        """Delete the file."""
        return await self._driver.run(self._ops.delete_file(file_id))


class AsyncPrompts(_AsyncResource):
    """See `batchgate.sdk.client.Prompts`."""

    async def create(
        self,
        slug: str,
        *,
        name: str | None = None,
        description: str | None = None,
        messages: Sequence[dict[str, Any]] | None = None,
        model_config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a prompt."""
        body: dict[str, Any] = {"slug": slug, "name": name, "description": description}
        body.update(messages=list(messages) if messages is not None else None, model_config=model_config)
        return await self._driver.run(self._ops.create_prompt(body))

    async def list(self) -> builtins.list[dict[str, Any]]:
        """The project's prompts."""
        return await self._driver.run(self._ops.list_prompts())

    async def retrieve(self, slug: str) -> dict[str, Any]:
        """One prompt."""
        return await self._driver.run(self._ops.retrieve_prompt(slug))

    async def create_version(
        self,
        slug: str,
        messages: Sequence[dict[str, Any]],
        model_config: dict[str, Any] | None = None,
        publish: bool = False,
    ) -> dict[str, Any]:
        """Add the next version."""
        body = {"messages": list(messages), "model_config": model_config, "publish": publish}
        return await self._driver.run(self._ops.create_version(slug, body))

    async def versions(self, slug: str) -> builtins.list[dict[str, Any]]:
        """Every version."""
        return await self._driver.run(self._ops.prompt_versions(slug))

    async def publish(self, slug: str, version: int) -> dict[str, Any]:
        """Make `version` the published one."""
        return await self._driver.run(self._ops.publish(slug, version))

    async def jsonl(self, slug: str, variables: Sequence[dict[str, Any]], version: int | None = None) -> str:
        """A batch input file (JSONL text)."""
        return await self._driver.run(self._ops.prompt_jsonl(slug, variables, version))


class AsyncJobs(_AsyncResource):
    """See `batchgate.sdk.client.Jobs`."""

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
    ) -> AsyncIterator[tuple[int, builtins.list[Row]]]:
        """Run a resumable chunked job; `async for chunk, rows in ...`."""
        source = Source(records, format, content_column)
        op = run_job(self._ops, source, operation, chunk_size, Path(manifest), params, poll_interval, progress)
        return self._driver.iterate(op)


class AsyncClient:
    """The asyncio batchgate client; see `Client`. Use with `async with`, or `await close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        settings = resolve(base_url, api_key)
        self.base_url, self.api_key = settings.base_url, settings.api_key
        self._http = httpx.AsyncClient(transport=transport, **http_options(settings, timeout))
        driver, ops = AsyncDriver(self._http), Ops(max_retries)
        self.completions = AsyncCompletions(driver, ops)
        self.batches = AsyncBatches(driver, ops)
        self.files = AsyncFiles(driver, ops)
        self.prompts = AsyncPrompts(driver, ops)
        self.jobs = AsyncJobs(driver, ops)
        self.agent = AsyncAgent(driver, max_retries)  # the Swarms-compatible agent API
        self.swarm = AsyncSwarm(driver, max_retries)
        self.webhooks = AsyncWebhooks(driver, max_retries)
        self.scheduling = AsyncScheduling(driver, max_retries)

    @classmethod
    def from_profile(cls, name: str, **kwargs: Any) -> Self:
        """A client for profile `name` of the profiles file (see `batchgate.sdk.config`), with
        the profile's `timeout` when it sets one and `kwargs` do not."""
        settings = load_profile(name)
        if settings.timeout is not None:
            kwargs.setdefault("timeout", settings.timeout)
        return cls(settings.base_url, settings.api_key, **kwargs)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"
