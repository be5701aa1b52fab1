"""The operations API on a real server and the real local model (smollm2-135m): label,
summarize, extract, enrich and run, synchronously and as batches, from JSON items and
from uploaded CSV / JSONL / text files, with output as paged JSON, JSONL and CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import httpx
import pytest
from support import Server, parse_jsonl, wait_for

MODEL = "smollm2-135m"
CATEGORIES = ["positive", "negative", "neutral"]
REVIEWS = ["I love this kettle, it boils fast.", "Broke after two days. Awful.", "It is a kettle."]


@pytest.fixture
def api(start_server: Callable[..., Server]) -> httpx.Client:
    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": MODEL, "BATCHGATE_ENGINE_SLOTS": "4"}
    server = start_server(env, insecure=True)
    return httpx.Client(base_url=server.url, timeout=120)


def items(*texts: str, **metadata: object) -> list[dict]:
    return [{"content": t, "metadata": {"n": i, **metadata}} for i, t in enumerate(texts)]


def test_label_synchronously_with_confidence_from_logprobs(api: httpx.Client) -> None:
    r = api.post("/api/completions/label", json={"items": items(*REVIEWS), "categories": CATEGORIES, "model": MODEL})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL and r.json()["operation"] == "label"
    rows = r.json()["results"]
    assert [row["index"] for row in rows] == [0, 1, 2] and [row["metadata"]["n"] for row in rows] == [0, 1, 2]
    assert [row["metadata"]["content"] for row in rows] == REVIEWS
    for row in rows:
        assert row["status"] == "succeeded", row
        assert row["result"]["label"] in CATEGORIES
        assert 0 < row["result"]["confidence"] <= 1
    multi = api.post(
        "/api/completions/label",
        json={"items": items(REVIEWS[0]), "categories": CATEGORIES, "multi_label": True, "model": MODEL},
    ).json()["results"][0]
    assert multi["status"] == "succeeded" and set(multi["result"]["labels"]) <= set(CATEGORIES)


def test_every_operation_returns_typed_results(api: httpx.Client) -> None:
    summary = api.post(
        "/api/completions/summarize", json={"items": items(REVIEWS[0]), "model": MODEL, "max_tokens": 24}
    )
    assert isinstance(summary.json()["results"][0]["result"], str)
    # an enum keeps the tiny test model's answer short (free text can ramble past max_tokens,
    # which is a failed row with the raw text: see test_a_cut_off_answer_is_a_failed_row_with_its_text)
    product = {"type": "string", "enum": ["kettle", "toaster", "phone"]}
    schema = {"type": "object", "properties": {"product": product}, "required": ["product"]}
    extract = api.post(
        "/api/completions/extract",
        json={"items": items(REVIEWS[0]), "extraction_instructions": "The product.", "schema": schema, "model": MODEL},
    ).json()["results"][0]
    assert extract["status"] == "succeeded" and isinstance(extract["result"]["product"], str)
    fields = [
        {"name": "sentiment", "type": "categorical", "description": "tone", "valid_values": CATEGORIES},
        {"name": "stars", "type": "integer", "description": "1 to 5"},
        {"name": "recommend", "type": "boolean", "description": "would buy again"},
    ]
    enrich = api.post("/api/completions/enrich", json={"items": items(REVIEWS[1]), "fields": fields, "model": MODEL})
    row = enrich.json()["results"][0]
    assert row["status"] == "succeeded", row
    assert set(row["result"]) == {"sentiment", "stars", "recommend"}
    assert row["result"]["sentiment"] in CATEGORIES and isinstance(row["result"]["stars"], int)
    assert isinstance(row["result"]["recommend"], bool)
    run = api.post(
        "/api/completions/run",
        json={
            "items": items(REVIEWS[2], shop="Acme"),
            "user_prompt_template": "Shop {shop}. Review: {content}. Reply with one word.",
            "model": MODEL,
            "max_tokens": 8,
        },
    ).json()["results"][0]
    assert run["status"] == "succeeded" and isinstance(run["result"], str)


def test_a_cut_off_answer_is_a_failed_row_with_its_text(api: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"product": {"type": "string"}}, "required": ["product"]}
    body = {"items": items(REVIEWS[0]), "extraction_instructions": "The product.", "schema": schema, "max_tokens": 3}
    row = api.post("/api/completions/extract", json={**body, "model": MODEL}).json()["results"][0]
    assert row["status"] == "failed" and row["result"] is None
    assert "max_tokens" in row["error"] and row["raw"]  # for a review queue


@pytest.mark.parametrize(
    ("operation", "body", "status", "param"),
    [
        ("label", {"categories": []}, 400, "categories"),
        ("label", {"categories": CATEGORIES, "model": "gpt-99"}, 400, "model"),
        ("enrich", {"fields": [{"name": "x", "type": "colour", "description": "?"}]}, 400, "fields[0].type"),
        ("run", {"user_prompt_template": "Shop {shop}: {content}"}, 400, "user_prompt_template"),
        ("run", {"operation": "label", "user_prompt_template": "{content}"}, 400, "operation"),
        ("label", {"categories": CATEGORIES, "summary_instructions": "x"}, 400, "summary_instructions"),
    ],
)
def test_bad_parameters_are_400s_naming_the_field(
    api: httpx.Client, operation: str, body: dict, status: int, param: str
) -> None:
    r = api.post(f"/api/completions/{operation}", json={"items": items("x"), **body})
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_only_the_five_operations_have_endpoints(api: httpx.Client) -> None:
    r = api.post("/api/completions/sing", json={"items": items("x")})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_more_items_than_a_synchronous_call_takes_points_to_batches(api: httpx.Client) -> None:
    r = api.post("/api/completions/label", json={"items": items(*["x"] * 51), "categories": CATEGORIES})
    assert r.status_code == 413 and "/api/batches" in r.json()["error"]["message"]


def finished(api: httpx.Client, batch_id: str) -> dict:
    return wait_for(
        lambda: (b := api.get(f"/api/batches/{batch_id}").json())["status"] in ("completed", "cancelled") and b,
        180,
        0.2,
    )


def test_an_operation_batch_pages_and_streams_its_output(api: httpx.Client) -> None:
    body = {"operation": "label", "items": items(*REVIEWS, shop="Acme"), "categories": CATEGORIES, "model": MODEL}
    created = api.post("/api/batches", json=body).json()
    assert created["status"] == "queued" and created["total_items"] == 3
    status = finished(api, created["batch_id"])
    assert status["completed_items"] + status["failed_items"] == 3 and status["progress_percentage"] == 100
    page = api.get(f"/api/batches/{created['batch_id']}/output", params={"offset": 1, "limit": 1}).json()
    assert {k: page[k] for k in ("id", "status", "offset", "limit", "total")} == {
        "id": created["batch_id"],
        "status": "completed",
        "offset": 1,
        "limit": 1,
        "total": 3,
    }
    assert [row["index"] for row in page["results"]] == [1]
    lines = parse_jsonl(api.get(f"/api/batches/{created['batch_id']}/output", params={"format": "jsonl"}).content)
    assert [row["id"] for row in lines] == ["item-0000000", "item-0000001", "item-0000002"]
    table = list(csv.DictReader(io.StringIO(api.get(f"/api/batches/{created['batch_id']}/output?format=csv").text)))
    assert list(table[0]) == ["content", "n", "shop", "id", "status", "error", "label", "confidence"]
    assert [row["content"] for row in table] == REVIEWS
    assert [row["shop"] for row in table] == ["Acme"] * 3
    listed = api.get("/api/batches").json()["data"]
    assert [b["batch_id"] for b in listed] == [created["batch_id"]] and listed[0]["status"] == "completed"
    # the same batch, seen through the OpenAI Batch API
    batch = api.get(f"/v1/batches/{created['batch_id']}").json()
    assert batch["request_counts"]["total"] == 3 and batch["status"] == "completed"


def test_a_csv_upload_becomes_a_batch_keeping_its_columns(api: httpx.Client) -> None:
    data = "review,city\n" + "\n".join(f'"{text}",Oslo' for text in REVIEWS) + "\n"
    form = {"operation": "label", "categories": json.dumps(CATEGORIES), "content_column": "review", "model": MODEL}
    created = api.post("/api/files", files={"file": ("reviews.csv", data.encode())}, data=form).json()
    assert created["total_items"] == 3 and created["file_id"].startswith("file-")
    finished(api, created["batch_id"])
    rows = api.get(f"/api/batches/{created['batch_id']}/output").json()["results"]
    assert [row["metadata"] for row in rows] == [{"review": text, "city": "Oslo"} for text in REVIEWS]
    ragged = api.post("/api/files", files={"file": ("bad.csv", b"review,city\nfine,Oslo\nragged\n")}, data=form)
    assert ragged.status_code == 400 and "row" in ragged.json()["error"]["message"].lower()


def test_an_operation_batch_can_be_cancelled(api: httpx.Client) -> None:
    body = {"operation": "summarize", "items": items(*REVIEWS * 10), "model": MODEL, "max_tokens": 64}
    created = api.post("/api/batches", json=body).json()
    cancelled = api.post(f"/api/batches/{created['batch_id']}/cancel").json()
    assert cancelled["status"] in ("processing", "cancelled")
    assert finished(api, created["batch_id"])["status"] == "cancelled"
    rows = api.get(f"/api/batches/{created['batch_id']}/output").json()["results"]
    assert len(rows) == 30 and any(row["status"] == "failed" for row in rows)
