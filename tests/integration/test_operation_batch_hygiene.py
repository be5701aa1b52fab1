"""Operation batches on a real server: a refused one leaves no file behind (issue 11 #6),
and their CSV output cannot carry a formula into a spreadsheet (issue 11 #12)."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest
from support import Server


@pytest.fixture
def http(server: Server) -> httpx.Client:
    key = server.create_key("p")
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def stored(server: Server, http: httpx.Client) -> tuple[int, int]:
    """(files the API lists, files on disk)."""
    listed = len(http.get("/v1/files", params={"limit": 10_000}).json()["data"])
    return listed, len(list((server.data_dir / "files").iterdir()))


def test_a_refused_operation_batch_keeps_no_file(server: Server, http: httpx.Client) -> None:
    before = stored(server, http)
    items = [{"content": "a"}, {"content": "b"}]
    refusals = [
        ({"completion_window": "5 weeks"}, "completion_window"),
        ({"completion_window": "9" * 5000 + "h"}, "completion_window"),
        ({"metadata": {"k": 7}}, "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ]
    for extra, param in refusals:
        r = http.post("/api/batches", json={"operation": "summarize", "items": items, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith(param), r.text
        form = {"operation": "summarize", **{k: str(v) for k, v in extra.items()}}
        r = http.post("/api/files", data=form, files={"file": ("items.jsonl", b'{"content": "a"}\n')})
        assert r.status_code == 400, r.text
    empty = http.post("/api/files", data={"operation": "summarize"}, files={"file": ("items.jsonl", b"")})
    assert empty.status_code == 400, empty.text
    assert stored(server, http) == before


def test_csv_output_neutralises_formulas(http: httpx.Client) -> None:
    dangerous = ['=HYPERLINK("http://x")', "+SUM(A1:A9)", "-2+3", "@cmd", "\tindent", "\rreturn"]
    harmless = ["-5", "+1.5", "plain", "a=b"]
    items = [{"content": text, "=col": text} for text in dangerous + harmless]
    batch = http.post("/api/batches", json={"operation": "summarize", "items": items}).json()
    deadline = time.time() + 60
    while http.get(f"/api/batches/{batch['batch_id']}").json()["status"] != "completed":
        assert time.time() < deadline
        time.sleep(0.05)
    output = http.get(f"/api/batches/{batch['batch_id']}/output", params={"format": "csv"})
    assert output.status_code == 200
    header, *rows = list(csv.reader(io.StringIO(output.text, newline="")))
    assert header[:2] == ["content", "'=col"]
    for text, row in zip(dangerous + harmless, rows, strict=True):
        expected = "'" + text if text in dangerous else text
        assert row[0] == row[1] == expected
    # JSON and JSONL keep the values as they are
    page = http.get(f"/api/batches/{batch['batch_id']}/output").json()
    assert [r["metadata"]["content"] for r in page["results"]] == dangerous + harmless
