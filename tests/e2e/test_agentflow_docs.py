"""AgentFlow's documentation, run as written against a real batchgate server.

The REST bodies are those of AgentFlow's Batch Processing page, sent with httpx; the SDK
snippets are those of its Python SDK page, executed with one change: the import line
(`from agentflow import AgentFlow` -> `from batchgate import Client as AgentFlow`).
Placeholders the documents leave open are filled in: "batch_abc123" becomes a real batch
id, `transcript` and the files the snippets read are provided, and `"items": [...]` gets
items. The server runs smollm2-135m, and routes the documents' model name,
"openai/gpt-4.1-mini", to it, as a team moving from AgentFlow would route its names.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import Server

MODEL = "smollm2-135m"
DOC_MODEL = "openai/gpt-4.1-mini"
TERMINAL = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("agentflow")
    config = home / "batchgate.toml"
    config.write_text(f'[models."{DOC_MODEL}"]\nbackend = "local"\nmodel = "{MODEL}"\n')
    env = {
        "BATCHGATE_BACKEND": "local",
        "BATCHGATE_DEFAULT_MODEL": MODEL,
        "BATCHGATE_ENGINE_SLOTS": "4",
        # the documents' bodies set no max_tokens, and a 135M model can ramble to the end of
        # its context: a short context bounds every answer (a cut-off one is still a row).
        # One thread: on a machine busier than its cores, two threads wait on each other
        # at every token
        "BATCHGATE_ENGINE_CTX_PER_SLOT": "256",
        "BATCHGATE_ENGINE_THREADS": "1",
        "BATCHGATE_CONFIG": str(config),
        "BATCHGATE_SETTLE_GRACE": "0.5",
    }
    srv = Server(home / "data", env).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.create_key("agentflow")


@pytest.fixture(scope="module")
def api(server: Server, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=900) as client:
        yield client


def wait(api: httpx.Client, batch_id: str) -> dict[str, Any]:
    deadline = time.time() + 600
    while (status := api.get(f"/api/batches/{batch_id}").json())["status"] not in TERMINAL:
        assert status["status"] in ("queued", "processing"), status
        assert time.time() < deadline, status
        time.sleep(0.2)
    return status


def check_rows(body: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The operations API's answer: `results` (one row per item, in order) and `model`."""
    assert set(body) >= {"results", "model"}, body
    rows = body["results"]
    assert [row["index"] for row in rows] == list(range(count))
    for row in rows:
        assert {"index", "id", "status", "result", "error", "metadata"} <= set(row)
    return rows


# --- REST: AgentFlow's Batch Processing page --------------------------------------------

LABEL = """
{
  "items": [
    { "content": "Customer says product is amazing but delivery was slow" },
    { "content": "Terrible experience, nothing works as advertised" },
    { "content": "Good value for the price, would recommend" }
  ],
  "categories": ["positive", "negative", "mixed"],
  "multi_label": false
}
"""

SUMMARIZE = """
{
  "items": [
    { "content": "Full transcript of 45-minute customer call..." }
  ],
  "summary_instructions": "Summarize the key decisions, action items, and any risk signals. Keep under 200 words.",
  "temperature": 0.3
}
"""

EXTRACT = """
{
  "items": [
    { "content": "Hi, I'm Sarah Chen, VP of Engineering at Acme Corp. We're looking to migrate 500 seats by Q3." }
  ],
  "extraction_instructions": "Extract: person_name, title, company, seat_count, timeline",
  "temperature": 0.0
}
"""

ENRICH = """
{
  "items": [
    {
      "content": "Enterprise SaaS company, 500 employees, Series C",
      "metadata": { "company": "Acme Corp", "industry": "Technology" }
    }
  ],
  "fields": [
    {
      "name": "company_segment",
      "type": "categorical",
      "description": "Market segment",
      "valid_values": ["enterprise", "mid-market", "smb"]
    },
    {
      "name": "growth_stage",
      "type": "categorical",
      "description": "Company growth stage",
      "valid_values": ["seed", "early", "growth", "mature"]
    },
    {
      "name": "estimated_arr",
      "type": "numeric",
      "description": "Estimated ARR range in millions"
    }
  ]
}
"""

RUN = """
{
  "items": [
    { "content": "Customer feedback text..." }
  ],
  "system_prompt": "You analyze customer feedback for product teams.",
  "user_prompt_template": "Analyze this feedback:\\n\\n{content}\\n\\nIdentify: 1) Feature requests 2) Pain points 3) Competitive mentions",
  "response_format": { "type": "json_object" },
  "model": "openai/gpt-4.1-mini",
  "temperature": 0.2
}
"""

SUBMIT = """
{
  "items": [...],
  "operation": "extract",
  "extraction_instructions": "Extract company name, role, and sentiment",
  "model": "openai/gpt-4.1-mini"
}
"""


def test_rest_operations_as_documented(api: httpx.Client) -> None:
    label = api.post("/api/completions/label", json=json.loads(LABEL))
    assert label.status_code == 200, label.text
    for row in check_rows(label.json(), 3):
        assert row["status"] == "succeeded", row
        assert row["result"]["label"] in ("positive", "negative", "mixed")
        assert 0 <= row["result"]["confidence"] <= 1

    summary = check_rows(api.post("/api/completions/summarize", json=json.loads(SUMMARIZE)).json(), 1)[0]
    assert summary["status"] == "succeeded" and isinstance(summary["result"], str), summary

    extracted = check_rows(api.post("/api/completions/extract", json=json.loads(EXTRACT)).json(), 1)[0]
    # a JSON object, by default; a 135M model may not fill it well, but it is one or a failed row with the text
    assert isinstance(extracted["result"], dict) or (extracted["status"] == "failed" and extracted["raw"])

    enriched = check_rows(api.post("/api/completions/enrich", json=json.loads(ENRICH)).json(), 1)[0]
    assert enriched["status"] == "succeeded", enriched
    assert enriched["result"]["company_segment"] in ("enterprise", "mid-market", "smb")
    assert enriched["result"]["growth_stage"] in ("seed", "early", "growth", "mature")
    assert isinstance(enriched["result"]["estimated_arr"], int | float)
    assert enriched["metadata"] == {"content": json.loads(ENRICH)["items"][0]["content"], "company": "Acme Corp",
                                    "industry": "Technology"}  # fmt: skip

    run = api.post("/api/completions/run", json=json.loads(RUN))
    assert run.status_code == 200, run.text
    assert run.json()["model"] in (DOC_MODEL, MODEL)
    row = check_rows(run.json(), 1)[0]
    assert isinstance(row["result"], dict) or (row["status"] == "failed" and row["raw"])


def test_rest_batches_and_file_upload_as_documented(api: httpx.Client, tmp_path: Path) -> None:
    body = json.loads(SUBMIT.replace("[...]", "[]"))
    body["items"] = [
        {"content": "Dana Ruiz here, head of procurement at Globex. Very happy with the pilot."},
        {"content": "Lee from Initech (CTO): the rollout keeps failing, we are frustrated."},
    ]
    created = api.post("/api/batches", json=body)
    assert created.status_code == 200, created.text
    assert {k: created.json()[k] for k in ("status", "total_items")} == {"status": "queued", "total_items": 2}
    batch_id = created.json()["batch_id"]

    status = wait(api, batch_id)
    assert {"batch_id", "status", "total_items", "completed_items", "progress_percentage"} <= set(status)
    assert status["status"] == "completed" and status["progress_percentage"] == 100.0

    page = api.get(f"/api/batches/{batch_id}/output?format=json").json()
    assert {k: page[k] for k in ("id", "status", "offset", "total")} == {
        "id": batch_id,
        "status": "completed",
        "offset": 0,
        "total": 2,
    }
    assert [row["index"] for row in page["results"]] == [0, 1]
    lines = api.get(f"/api/batches/{batch_id}/output", params={"format": "jsonl"}).text.splitlines()
    assert [json.loads(line) for line in lines] == page["results"]
    table = list(csv.DictReader(io.StringIO(api.get(f"/api/batches/{batch_id}/output?format=csv").text)))
    assert [row["content"] for row in table] == [item["content"] for item in body["items"]]

    # the documented form: file=@customers.csv operation=classify categories=enterprise,mid-market,smb
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "id,content\n"
        "C-1,Global bank with 40000 employees in 30 countries\n"
        "C-2,Family bakery with two shops\n"
        "C-3,Regional logistics firm with 600 staff\n"
    )
    with open(customers, "rb") as f:
        form = {"operation": "classify", "categories": "enterprise,mid-market,smb"}
        uploaded = api.post("/api/files", files={"file": ("customers.csv", f)}, data=form)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["operation"] == "label" and uploaded.json()["total_items"] == 3
    wait(api, uploaded.json()["batch_id"])
    table = list(
        csv.DictReader(io.StringIO(api.get(f"/api/batches/{uploaded.json()['batch_id']}/output?format=csv").text))
    )
    # the customers' own ids come back under `id`; batchgate's item ids move to `_id`
    assert [row["id"] for row in table] == ["C-1", "C-2", "C-3"]
    assert [row["_id"] for row in table] == ["item-0000000", "item-0000001", "item-0000002"]
    assert all(row["label"] in ("enterprise", "mid-market", "smb") for row in table if row["status"] == "succeeded")

    long_batch = api.post("/api/batches", json={**body, "items": body["items"] * 20}).json()["batch_id"]
    assert api.post(f"/api/batches/{long_batch}/cancel").status_code == 200
    assert wait(api, long_batch)["status"] == "cancelled"


# --- SDK: AgentFlow's Python SDK page ----------------------------------------------------

CLASSIFY = """
from agentflow import AgentFlow

items = [
    {"content": "The product is amazing, but delivery was slow."},
    {"content": "Terrible support experience. I waited three hours."},
]

with AgentFlow.from_profile("prod") as client:
    result = client.completions.classify(
        items=items,
        categories=["positive", "negative", "mixed"],
    )

    for row in result.results:
        print(row["result"]["label"], row["result"]["confidence"])
"""

EXTRACT_SDK = """
result = client.completions.extract(
    items=[{"content": "Sarah Chen, VP Engineering at Acme Corp, wants 500 seats by Q3."}],
    extraction_instructions="Extract contact, title, company, seat_count, and timeline.",
)
"""

SUMMARIZE_SDK = """
result = client.completions.summarize(
    items=[{"content": transcript}],
    summary_instructions="Summarize decisions, action items, and risks in under 200 words.",
)
"""

ENRICH_SDK = """
result = client.completions.enrich(
    items=[{"content": "Enterprise SaaS company, 500 employees, Series C"}],
    fields=[
        {
            "name": "company_segment",
            "type": "categorical",
            "valid_values": ["enterprise", "mid-market", "smb"],
            "description": "Market segment",
        }
    ],
    include_context=True,
)
"""

CUSTOM_RUN_SDK = """
result = client.completions.run(
    operation="feedback_analysis",
    items=[{"content": "Customer feedback text..."}],
    system_prompt="You analyze customer feedback for product teams.",
    user_prompt_template="Analyze this feedback:\\n\\n{content}",
    response_format={"type": "json_object"},
)
"""

SUBMIT_SDK = """
from agentflow import AgentFlow

with AgentFlow.from_profile("prod") as client:
    batch = client.batches.submit(
        operation="label",
        items=[
            {"content": "The product is amazing, but delivery was slow."},
            {"content": "Terrible support experience. I waited three hours."},
        ],
        categories=["positive", "negative", "mixed"],
    )

    print(batch.id, batch.status, batch.total_items)
"""

SUBMIT_AND_WAIT_SDK = """
batch = client.batches.submit_and_wait(
    operation="extract",
    items=[{"content": "Sarah Chen, VP Engineering at Acme Corp, wants 500 seats by Q3."}],
    extraction_instructions="Extract contact, title, company, seat_count, and timeline.",
    timeout=300,
)
"""

RETRIEVE_SDK = """
batch = client.batches.retrieve("batch_abc123")
print(batch.status, batch.progress)
"""

WAIT_SDK = """
batch = client.batches.wait("batch_abc123", timeout=300)
"""

PAGE_SDK = """
page = client.batches.output("batch_abc123", format="json", offset=0, limit=1000)

for row in page.results:
    print(row["result"])
"""

ITER_SDK = """
for row in client.batches.iter_output("batch_abc123", page_size=1000):
    print(row["result"])
"""

TEXT_SDK = """
jsonl_text = client.batches.output("batch_abc123", format="jsonl")
csv_text = client.batches.output("batch_abc123", format="csv")
"""

DOWNLOAD_SDK = """
client.batches.download_output("batch_abc123", "batch-output.jsonl", format="jsonl")
client.batches.download_output("batch_abc123", "batch-output.csv", format="csv")
"""

UPLOAD_SDK = """
batch = client.batches.upload_file(
    "reviews.jsonl",
    operation="run",
    system_prompt="Classify each review as positive, negative, or mixed.",
    user_prompt_template="{content}",
)
"""

CANCEL_SDK = """
client.batches.cancel("batch_abc123")
"""


def doc(snippet: str, **placeholders: str) -> str:
    """A documented snippet with the one allowed change, and its placeholders filled."""
    code = textwrap.dedent(snippet).replace(
        "from agentflow import AgentFlow", "from batchgate import Client as AgentFlow"
    )
    for placeholder, value in placeholders.items():
        code = code.replace(placeholder, value)
    return code


@pytest.fixture
def profile(server: Server, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AgentFlow.from_profile("prod"): a profiles file naming this server, and a working dir
    for the files the snippets read and write."""
    profiles = tmp_path / "profiles.toml"
    # a small model on a busy machine can take minutes per call: the profile says how long to wait
    profiles.write_text(f'[prod]\nbase_url = "{server.url}"\napi_key_env = "AGENTFLOW_TEST_KEY"\ntimeout = 900\n')
    monkeypatch.setenv("BATCHGATE_PROFILES", str(profiles))
    monkeypatch.setenv("AGENTFLOW_TEST_KEY", key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_sdk_snippets_run_as_written(profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scope: dict[str, Any] = {}

    def run(snippet: str, **placeholders: str) -> Any:
        exec(doc(snippet, **placeholders), scope)
        return scope.get("result")

    result = run(CLASSIFY)
    labels = capsys.readouterr().out.splitlines()
    assert len(labels) == 2 and all(line.split()[0] in ("positive", "negative", "mixed") for line in labels), labels
    assert result.model

    from batchgate import Client as AgentFlow

    with AgentFlow.from_profile("prod") as client:
        transcript = "Alex: we renew at the new price. Sam: I send the contract Friday. Risk: legal may delay it."
        scope.update(client=client, transcript=transcript)
        assert len(run(EXTRACT_SDK).results) == 1
        assert isinstance(run(SUMMARIZE_SDK).results[0]["result"], str)
        enriched = run(ENRICH_SDK).results[0]
        assert enriched["result"]["company_segment"] in ("enterprise", "mid-market", "smb"), enriched
        custom = run(CUSTOM_RUN_SDK)
        assert custom.operation == "feedback_analysis" and custom.results[0]["operation"] == "feedback_analysis"

    run(SUBMIT_SDK)
    submitted = scope["batch"]
    assert capsys.readouterr().out.split() == [submitted.id, "queued", "2"]

    with AgentFlow.from_profile("prod") as client:
        scope["client"] = client
        run(SUBMIT_AND_WAIT_SDK)
        assert scope["batch"].status == "completed" and scope["batch"].total_items == 1
        run(RETRIEVE_SDK, batch_abc123=submitted.id)
        assert capsys.readouterr().out.split()[0] in ("queued", "processing", "completed")
        run(WAIT_SDK, batch_abc123=submitted.id)
        assert scope["batch"].status == "completed" and scope["batch"].progress == 100.0

        run(PAGE_SDK, batch_abc123=submitted.id)
        page = scope["page"]
        assert (page.id, page.status, page.offset, page.limit, page.total) == (submitted.id, "completed", 0, 1000, 2)
        printed = capsys.readouterr().out
        run(ITER_SDK, batch_abc123=submitted.id)
        assert capsys.readouterr().out == printed and len(printed.splitlines()) == 2

        run(TEXT_SDK, batch_abc123=submitted.id)
        assert [json.loads(line) for line in scope["jsonl_text"].splitlines()] == page.results
        assert scope["csv_text"].startswith("content,id,status,error,label,confidence")
        run(DOWNLOAD_SDK, batch_abc123=submitted.id)
        assert (profile / "batch-output.jsonl").read_text() == scope["jsonl_text"]
        assert (profile / "batch-output.csv").read_bytes().decode() == scope["csv_text"]  # CSV lines end \r\n

        (profile / "reviews.jsonl").write_text(
            '{"content": "Love it, works great."}\n{"content": "Broke after a week."}\n'
        )
        run(UPLOAD_SDK)
        assert (scope["batch"].status, scope["batch"].total_items, scope["batch"].operation) == ("queued", 2, "run")

        running = client.batches.submit("summarize", [f"text {i}" for i in range(40)])
        run(CANCEL_SDK, batch_abc123=running.id)
        assert client.batches.wait(running.id, timeout=300).status == "cancelled"
