"""Every SDK method, written once as an effect generator (see `_core`).

`Client` and `AsyncClient` resources are thin shells that hand these generators to their
driver; the request shapes, response parsing, polling and paging live only here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from batchgate.protocol.operations import OPERATIONS, canonical_operation
from batchgate.sdk._core import Call, Emit, Op, Sleep, request, request_json
from batchgate.sdk._progress import Bar
from batchgate.sdk.errors import WaitTimeoutError
from batchgate.sdk.types import Batch, CompletionResult, OutputPage

MAX_POLL_INTERVAL = 10.0
POLL_GROWTH = 1.5


def _id(value: str) -> str:
    return quote(str(value), safe="")


def form_fields(params: dict[str, Any]) -> dict[str, str]:
    """Operation parameters as multipart form fields: strings as they are, anything else
    JSON-encoded (`categories='["a","b"]'`, `multi_label=true`), as `POST /api/files` reads them."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items() if v is not None}


class Ops:
    """The operations of one client; `max_retries` applies to every request."""

    def __init__(self, max_retries: int):
        self.max_retries = max_retries

    def json(self, call: Call) -> Op[Any]:
        return request_json(call, self.max_retries)

    # ---- completions ----------------------------------------------------------------------

    def complete(self, operation: str, items: Sequence[Any], params: dict[str, Any]) -> Op[CompletionResult]:
        """A built-in operation (or `classify`) on its own endpoint; any other name is a
        custom run of that name on `/api/completions/run`."""
        body = {**_drop_none(params), "items": list(items)}
        endpoint = canonical_operation(operation)
        if endpoint not in OPERATIONS:
            endpoint, body["operation"] = "run", operation
        # not a creating request: nothing is stored, so a retry costs compute, never a duplicate
        response = yield from request(Call("POST", f"/api/completions/{endpoint}", json=body), self.max_retries)
        return CompletionResult.from_json(response.content)

    # ---- operation batches ----------------------------------------------------------------

    def submit(self, operation: str, items: Sequence[Any] | None, params: dict[str, Any]) -> Op[Batch]:
        body = {**_drop_none(params), "operation": operation}
        if items is not None:
            body["items"] = list(items)
        data = yield from self.json(Call("POST", "/api/batches", json=body, idempotent=False))
        return Batch.model_validate(data)

    def retrieve(self, batch_id: str) -> Op[Batch]:
        data = yield from self.json(Call("GET", f"/api/batches/{_id(batch_id)}"))
        return Batch.model_validate(data)

    def wait(self, batch_id: str, timeout: float | None, poll_interval: float, progress: bool | None) -> Op[Batch]:
        """Poll until the batch ends: every `poll_interval` seconds at first, then 1.5× longer
        each time up to 10 s, so a long batch costs few requests and a short one ends fast."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        bar = Bar(progress, batch_id)
        try:
            while True:
                batch = yield from self.retrieve(batch_id)
                bar.update(batch.completed_items + batch.failed_items, total=batch.total_items, status=batch.status)
                if batch.done:
                    return batch
                delay = interval
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise WaitTimeoutError(
                            f"batch {batch_id} is still {batch.status} after {timeout} s "
                            f"({batch.completed_items + batch.failed_items}/{batch.total_items} items done)",
                            code="wait_timeout",
                        )
                    delay = min(delay, left)
                yield Sleep(delay)
                interval = min(max(interval, 0.05) * POLL_GROWTH, MAX_POLL_INTERVAL)
        finally:
            bar.close()

    def submit_and_wait(
        self,
        operation: str,
        items: Sequence[Any] | None,
        params: dict[str, Any],
        timeout: float | None,
        poll_interval: float,
        progress: bool | None,
    ) -> Op[Batch]:
        batch = yield from self.submit(operation, items, params)
        return (yield from self.wait(batch.id, timeout, poll_interval, progress))

    def output(self, batch_id: str, format: str, offset: int, limit: int | None) -> Op[OutputPage | str]:
        """One JSON page, or the JSONL / CSV text."""
        params: dict[str, Any] = {"format": format, "offset": offset}
        if limit is not None:
            params["limit"] = limit
        response = yield from request(
            Call("GET", f"/api/batches/{_id(batch_id)}/output", params=params), self.max_retries
        )
        return OutputPage.from_json(response.content) if format == "json" else response.text

    def page(self, batch_id: str, offset: int, limit: int) -> Op[OutputPage]:
        page = yield from self.output(batch_id, "json", offset, limit)
        assert isinstance(page, OutputPage)
        return page

    def iter_output(self, batch_id: str, page_size: int) -> Op[None]:
        offset = 0
        while True:
            page = yield from self.page(batch_id, offset, page_size)
            for row in page.results:
                yield Emit(row)
            offset += len(page.results)
            if not page.results or not page.has_more:
                return

    def download_output(self, batch_id: str, path: Path, format: str, progress: bool | None) -> Op[Path]:
        bar = Bar(progress, f"{batch_id} → {path.name}", bytes_=True)
        call = Call(
            "GET",
            f"/api/batches/{_id(batch_id)}/output",
            params={"format": format},
            sink=path,
            on_bytes=lambda n: bar.update(advance=n),
        )
        try:
            yield from request(call, self.max_retries)
        finally:
            bar.close()
        return path

    def upload_records(self, path: Path, operation: str, params: dict[str, Any]) -> Op[Batch]:
        fields = form_fields({**params, "operation": operation})
        call = Call("POST", "/api/files", data=fields, file=(path.name, path), idempotent=False)
        data = yield from self.json(call)
        return Batch.model_validate(data)

    def cancel(self, batch_id: str) -> Op[Batch]:
        data = yield from self.json(Call("POST", f"/api/batches/{_id(batch_id)}/cancel"))
        return Batch.model_validate(data)

    def batch_action(self, batch_id: str, action: str) -> Op[dict[str, Any]]:
        """POST /v1/batches/{id}/{pause|resume|retry} (extensions): the Batch object."""
        call = Call("POST", f"/v1/batches/{_id(batch_id)}/{action}", idempotent=action != "retry")
        return (yield from self.json(call))

    def list_batches(self, limit: int, after: str | None) -> Op[list[Batch]]:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        data = yield from self.json(Call("GET", "/api/batches", params=params))
        return [Batch.model_validate(b) for b in data["data"]]

    # ---- files ----------------------------------------------------------------------------

    def upload_file(self, source: Path | bytes, purpose: str, filename: str | None) -> Op[dict[str, Any]]:
        name = filename or (source.name if isinstance(source, Path) else "upload.jsonl")
        call = Call("POST", "/v1/files", data={"purpose": purpose}, file=(name, source), idempotent=False)
        return (yield from self.json(call))

    def list_files(self, purpose: str | None) -> Op[list[dict[str, Any]]]:
        params = {"purpose": purpose} if purpose else None
        data = yield from self.json(Call("GET", "/v1/files", params=params))
        return list(data["data"])

    def retrieve_file(self, file_id: str) -> Op[dict[str, Any]]:
        return (yield from self.json(Call("GET", f"/v1/files/{_id(file_id)}")))

    def file_content(self, file_id: str) -> Op[bytes]:
        response = yield from request(Call("GET", f"/v1/files/{_id(file_id)}/content"), self.max_retries)
        return response.content

    def download_file(self, file_id: str, path: Path, progress: bool | None) -> Op[Path]:
        bar = Bar(progress, f"{file_id} → {path.name}", bytes_=True)
        call = Call("GET", f"/v1/files/{_id(file_id)}/content", sink=path, on_bytes=lambda n: bar.update(advance=n))
        try:
            yield from request(call, self.max_retries)
        finally:
            bar.close()
        return path

    def delete_file(self, file_id: str) -> Op[dict[str, Any]]:
        return (yield from self.json(Call("DELETE", f"/v1/files/{_id(file_id)}")))

    # ---- prompts --------------------------------------------------------------------------

    def create_prompt(self, body: dict[str, Any]) -> Op[dict[str, Any]]:
        return (yield from self.json(Call("POST", "/v1/prompts", json=_drop_none(body), idempotent=False)))

    def list_prompts(self) -> Op[list[dict[str, Any]]]:
        data = yield from self.json(Call("GET", "/v1/prompts"))
        return list(data["data"])

    def retrieve_prompt(self, slug: str) -> Op[dict[str, Any]]:
        return (yield from self.json(Call("GET", f"/v1/prompts/{_id(slug)}")))

    def create_version(self, slug: str, body: dict[str, Any]) -> Op[dict[str, Any]]:
        call = Call("POST", f"/v1/prompts/{_id(slug)}/versions", json=_drop_none(body), idempotent=False)
        return (yield from self.json(call))

    def prompt_versions(self, slug: str) -> Op[list[dict[str, Any]]]:
        data = yield from self.json(Call("GET", f"/v1/prompts/{_id(slug)}/versions"))
        return list(data["data"])

    def publish(self, slug: str, version: int) -> Op[dict[str, Any]]:
        return (yield from self.json(Call("POST", f"/v1/prompts/{_id(slug)}/versions/{int(version)}/publish")))

    def prompt_jsonl(self, slug: str, variables: Sequence[dict[str, Any]], version: int | None) -> Op[str]:
        body = _drop_none({"variables": list(variables), "version": version})
        response = yield from request(Call("POST", f"/v1/prompts/{_id(slug)}/jsonl", json=body), self.max_retries)
        return response.text


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
