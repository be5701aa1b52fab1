"""Operation batches without HTTP, on the in-memory fakes: submitting, status, listing
(filtered in the store), and output read back from any offset by seeking, in JSON pages,
JSONL and CSV, with every input column kept under its own name."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from batchgate.app import Services, build_services, build_worker
from batchgate.core import operation_output
from batchgate.core.errors import BackendError, ConflictError, InvalidRequestError
from batchgate.core.models import FinishedRow, RequestState
from batchgate.core.operation_runs import CHAT, item_id
from batchgate.core.operations import Item, compile_request, parse_operation
from batchgate.core.output import format_line
from batchgate.core.ports import BackendRequest, BackendResponse
from batchgate.protocol.operations import BatchCreateRequest, OperationBatch, RecordsUpload
from batchgate.settings import Settings
from batchgate.testing import InMemoryStore, MemoryBlobStore, ScriptedBackend


class OddItemsFail(ScriptedBackend):
    """Echoes, except that every odd item fails without a response: both result files get lines."""

    async def execute(self, request: BackendRequest) -> BackendResponse:
        if int(request.custom_id.removeprefix("item-")) % 2:
            raise BackendError("no luck", code="backend_error")
        return await super().execute(request)


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    settings = Settings(home=tmp_path, backend="scripted", insecure_no_auth=True, max_attempts=1)
    services = build_services(settings, InMemoryStore(), MemoryBlobStore())
    yield services
    services.close()


def project(svc: Services) -> str:
    return svc.keys.default_project().id


def run_to_end(svc: Services, batch_id: str) -> OperationBatch:
    worker = build_worker(svc, OddItemsFail())
    worker.config.poll_interval = 0.01
    worker.config.flush_interval = 0.01

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.time() + 30
        try:
            while svc.operation_batches.status(project(svc), batch_id).status not in ("completed", "failed"):
                assert time.time() < deadline and not task.done()
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await task

    asyncio.run(main())
    return svc.operation_batches.status(project(svc), batch_id)


def read(svc: Services, batch_id: str, fmt: Any, offset: int = 0, limit: int | None = None) -> bytes:
    return b"".join(svc.operation_batches.output(project(svc), batch_id, fmt, offset, limit).chunks)


ITEMS = [{"content": f"review {i}", "id": f"L-{i}", "status": "open"} for i in range(250)]


def submit(svc: Services, **params: Any) -> str:
    request = BatchCreateRequest.model_validate(
        {"operation": "feedback_analysis", "items": ITEMS, "user_prompt_template": "{content}", **params}
    )
    return svc.operation_batches.create(project(svc), request).batch_id


def test_pages_from_any_offset_are_the_same_rows_as_the_whole_output(svc: Services) -> None:
    batch_id = submit(svc)
    status = run_to_end(svc, batch_id)
    assert (status.status, status.completed_items, status.failed_items, status.progress_percentage) == (
        "completed",
        125,
        125,
        100.0,
    )
    assert status.operation == "feedback_analysis"
    whole = [orjson.loads(line) for line in read(svc, batch_id, "jsonl").splitlines()]
    assert [row["index"] for row in whole] == list(range(250))
    assert whole[3]["status"] == "failed" and whole[3]["error"] == "no luck"
    assert whole[4]["result"] == "echo: review 4" and whole[4]["operation"] == "feedback_analysis"
    # the item's own id and status are kept under their own names, beside batchgate's
    assert whole[4]["metadata"] == {"content": "review 4", "id": "L-4", "status": "open"}
    for offset in (0, 1, 99, 100, 249, 250, 400):
        for limit in (1, 7, 1000):
            page = orjson.loads(read(svc, batch_id, "json", offset, limit))
            assert page["results"] == whole[offset : offset + limit], (offset, limit)
            assert (page["id"], page["status"], page["offset"], page["limit"], page["total"]) == (
                batch_id,
                "completed",
                offset,
                limit,
                250,
            )
    assert [orjson.loads(line) for line in read(svc, batch_id, "jsonl", 240).splitlines()] == whole[240:]
    assert orjson.loads(read(svc, batch_id, "json"))["limit"] == 10_000


def test_csv_keeps_every_input_column_and_renames_only_clashing_output_columns(svc: Services) -> None:
    batch_id = submit(svc)
    run_to_end(svc, batch_id)
    table = list(csv.reader(io.StringIO(read(svc, batch_id, "csv").decode())))
    assert table[0] == ["content", "id", "status", "_id", "_status", "error", "result"]
    assert table[5] == ["review 4", "L-4", "open", "item-0000004", "succeeded", "", "echo: review 4"]
    assert table[4][:5] == ["review 3", "L-3", "open", "item-0000003", "failed"]
    assert len(table) == 251
    tail = list(csv.reader(io.StringIO(read(svc, batch_id, "csv", offset=248).decode())))
    assert tail == [table[0], table[249], table[250]]


def test_result_fields_that_clash_get_underscores_too() -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}, "total": {"type": "number"}}}
    op = parse_operation("extract", {"extraction_instructions": "x", "schema": schema})
    header, fields = operation_output.csv_columns(op, ["id", "total"])
    assert header == ["id", "total", "_id", "status", "error", "__id", "_total"]
    assert fields == ["id", "status", "error", "id", "total"]


def test_a_batch_submitted_before_items_lines_led_with_their_index_is_still_read(svc: Services) -> None:
    # as submit wrote it before commit 3c547e5: items lines {"content", "metadata"} (the line
    # number is the index), a spec without "columns", an operation without "name"
    op = parse_operation("label", {"categories": ["a", "b"]})
    with svc.files.upload(project(svc)) as kept, svc.files.upload(project(svc)) as requests:
        for i, item in enumerate(ITEMS):
            metadata = {k: v for k, v in item.items() if k != "content"}
            kept.write(orjson.dumps({"content": item["content"], "metadata": metadata}) + b"\n")
            body = compile_request(op, Item(item["content"], metadata))
            line = {"custom_id": item_id(i), "method": "POST", "url": CHAT, "body": body}
            requests.write(orjson.dumps(line) + b"\n")
        items_file = kept.commit("batch", "items.jsonl")
        input_file = requests.commit("batch", "requests.jsonl")
    spec = {"operation": {"kind": "label", "model": op.model, "params": op.params}, "items_file_id": items_file.id}
    batch = svc.batches.create(project(svc), input_file.id, CHAT, "24h", None, operation={**spec, "items": 250})
    run_to_end(svc, batch.id)
    whole = [orjson.loads(line) for line in read(svc, batch.id, "jsonl").splitlines()]
    assert [row["index"] for row in whole] == list(range(250))
    assert whole[4]["metadata"] == {"content": "review 4", "id": "L-4", "status": "open"}
    assert whole[3]["error"] == "no luck" and whole[4]["status"] == "failed"  # echoes are no label
    for offset, limit in ((0, 7), (99, 100), (249, 5), (250, 1)):
        page = orjson.loads(read(svc, batch.id, "json", offset, limit))
        assert page["results"] == whole[offset : offset + limit], (offset, limit)
    table = list(csv.reader(io.StringIO(read(svc, batch.id, "csv", offset=248).decode())))
    assert table[0][:5] == ["content", "id", "status", "_id", "_status"]
    assert [r[:4] for r in table[1:]] == [
        ["review 248", "L-248", "open", "item-0000248"],
        ["review 249", "L-249", "open", "item-0000249"],
    ]


def test_output_is_refused_until_the_batch_ends_and_pages_are_bounded(svc: Services) -> None:
    batch_id = submit(svc)
    with pytest.raises(ConflictError) as running:
        svc.operation_batches.output(project(svc), batch_id, "json")
    assert running.value.code == "batch_not_finished"
    run_to_end(svc, batch_id)
    for offset, limit, param in ((-1, None, "offset"), (0, 0, "limit"), (0, 10_001, "limit")):
        with pytest.raises(InvalidRequestError) as bad:
            svc.operation_batches.output(project(svc), batch_id, "json", offset, limit)
        assert bad.value.param == param


def test_listing_filters_in_the_store_before_paging(svc: Services) -> None:
    ids = []
    for _ in range(3):
        ids.append(submit(svc))
        with svc.files.upload(project(svc)) as upload:  # an OpenAI batch between each: not listed
            upload.write(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
            file = upload.commit("batch", "input.jsonl")
        svc.batches.create(project(svc), file.id, "/v1/chat/completions", "24h")
    first = svc.operation_batches.list(project(svc), None, 2)
    assert [b.batch_id for b in first.data] == ids[::-1][:2] and first.has_more
    rest = svc.operation_batches.list(project(svc), first.last_id, 2)
    assert [b.batch_id for b in rest.data] == [ids[0]] and not rest.has_more


def test_an_upload_keeps_string_form_values_and_discards_a_file_it_could_not_use(svc: Services) -> None:
    data = b"2021,notes\nfirst,a\nsecond,b\n"
    with svc.files.upload(project(svc)) as upload:
        upload.write(data)
        source = upload.commit("batch", "years.csv")
    form = RecordsUpload.from_form({"operation": "classify", "categories": "x, y", "content_column": "2021"})
    created = svc.operation_batches.upload(project(svc), form, source.id)
    assert (created.operation, created.total_items, created.file_id) == ("label", 2, source.id)
    with svc.files.upload(project(svc)) as upload:
        upload.write(data)
        unused = upload.commit("batch", "years.csv")
    bad = RecordsUpload.from_form({"operation": "label", "categories": "x", "content_column": "2020"})
    with pytest.raises(InvalidRequestError) as missing:
        svc.operation_batches.upload(project(svc), bad, unused.id)
    assert missing.value.param == "content_column"
    assert unused.id not in [f.id for f in svc.files.list(project(svc), None, None, 100, "desc").data]


def test_form_values_are_read_as_their_parameters_types() -> None:
    form = RecordsUpload.from_form(
        {
            "operation": "label",
            "categories": '["a", "b"]',
            "multi_label": "true",
            "temperature": "0.5",
            "content_column": "2021",
            "format": "",
            "schema": '{"type": "object"}',
            "metadata": '{"team": "growth"}',
        }
    )
    assert (form.categories, form.multi_label, form.temperature) == (["a", "b"], True, 0.5)
    assert (form.content_column, form.format, form.schema_, form.metadata) == (
        "2021",
        None,
        {"type": "object"},
        {"team": "growth"},
    )
    comma = RecordsUpload.from_form({"operation": "classify", "categories": "enterprise, mid-market,smb"})
    assert comma.categories == ["enterprise", "mid-market", "smb"]
    with pytest.raises(ValidationError) as bad:
        RecordsUpload.from_form({"operation": "label", "multi_label": "maybe"})
    assert bad.value.errors()[0]["loc"] == ("multi_label",)


class CountingReads(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.bytes_read += len(out)
        return out


def test_seek_finds_the_first_line_of_a_page_in_a_few_small_reads() -> None:
    count = 100_000
    items = CountingReads(b"".join(operation_output.item_line(i, {"content": f"item {i}"}) for i in range(count)))
    for target in (0, 1, 54_321, count - 1):
        start = operation_output.seek(items, operation_output.item_key, target)
        assert orjson.loads(items.readline())["index"] == target and items.tell() > start
    items.bytes_read = 0
    operation_output.seek(items, operation_output.item_key, count - 10)
    assert items.bytes_read < 200_000, "a page near the end must not read the file from the start"
    assert operation_output.seek(items, operation_output.item_key, count) == len(items.getvalue())

    # result files hold only some items (the others are in the other file), and long lines
    def finished(i: int) -> FinishedRow:
        body = orjson.dumps({"text": "x" * (i % 7) * 3000})
        return FinishedRow(i, f"item-{i:07d}", 0, 0, RequestState.SUCCEEDED, None, 200, body, None, None)

    results = io.BytesIO(b"".join(format_line("batch_1", finished(i), f"item-{i:07d}") for i in range(0, 2000, 3)))
    for target, expected in ((0, 0), (1, 3), (3, 3), (1000, 1002), (1998, 1998), (1999, None)):
        operation_output.seek(results, operation_output.result_key, target)
        line = results.readline()
        assert (orjson.loads(line)["custom_id"] if line else None) == (
            None if expected is None else f"item-{expected:07d}"
        )
