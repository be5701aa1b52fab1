"""Prompt templates on a real server (scripted echo backend, so the rendered prompt is
visible in each answer): versions, publishing, batch lines that name a prompt mixed with
literal ones, validation errors naming the line, and the JSONL helper."""

from __future__ import annotations

import httpx
import pytest
from support import Server, jsonl, parse_jsonl, wait_for

CHAT = "/v1/chat/completions"
TRIAGE = {
    "slug": "triage",
    "name": "Ticket triage",
    "messages": [
        {"role": "system", "content": "You triage support tickets for {{ product }}."},
        {"role": "user", "content": "Ticket: {{ticket}}"},
    ],
    "model_config": {"model": "test-model", "temperature": 0, "max_tokens": 16},
}


@pytest.fixture
def api(server: Server) -> httpx.Client:
    client = httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {server.create_key('p')}"}
    )
    assert client.post("/v1/prompts", json=TRIAGE).status_code == 200
    return client


def run(api: httpx.Client, lines: list[dict]) -> dict:
    file_id = api.post("/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()["id"]
    batch_id = api.post("/v1/batches", json={"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"})
    return wait_for(
        lambda: (b := api.get(f"/v1/batches/{batch_id.json()['id']}").json())["status"] in ("completed", "failed") and b
    )


def line(custom_id: str, **body: object) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def test_versions_and_publishing(api: httpx.Client) -> None:
    prompt = api.get("/v1/prompts/triage").json()
    assert prompt["published_version"] == 1 and prompt["published"]["variables"] == ["product", "ticket"]
    v2 = api.post(
        "/v1/prompts/triage/versions",
        json={"messages": [{"role": "user", "content": "Urgent? {{ticket}}"}], "model_config": {"model": "test-model"}},
    ).json()
    assert v2["version"] == 2 and api.get("/v1/prompts/triage").json()["published_version"] == 1
    assert [v["version"] for v in api.get("/v1/prompts/triage/versions").json()["data"]] == [1, 2]
    assert api.post("/v1/prompts/triage/versions/2/publish").json()["published_version"] == 2
    assert api.post("/v1/prompts/triage/versions/9/publish").status_code == 404
    assert [p["slug"] for p in api.get("/v1/prompts").json()["data"]] == ["triage"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({**TRIAGE, "slug": "Bad Slug"}, 400, "slug"),
        (TRIAGE, 409, "slug"),
        ({**TRIAGE, "slug": "x", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0]"),
        ({**TRIAGE, "slug": "y", "model_config": {"messages": []}}, 400, "model_config.messages"),
    ],
)
def test_bad_prompts_are_refused_naming_the_field(api: httpx.Client, body: dict, status: int, param: str) -> None:
    r = api.post("/v1/prompts", json=body)
    assert r.status_code == status and r.json()["error"]["param"] == param


def test_prompt_lines_and_literal_lines_mix_in_one_batch(api: httpx.Client) -> None:
    api.post("/v1/prompts/triage/versions", json={"messages": [{"role": "user", "content": "v2 {{ticket}}"}]})
    batch = run(
        api,
        [
            line("published", prompt_slug="triage", variables={"product": "Kettle", "ticket": "No power"}),
            line("pinned", prompt_slug="triage", prompt_version=2, variables={"ticket": "Lid"}, model="other-model"),
            line("literal", model="test-model", messages=[{"role": "user", "content": "plain"}]),
        ],
    )
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 3
    rows = {
        r["custom_id"]: r["response"]["body"]
        for r in parse_jsonl(api.get(f"/v1/files/{batch['output_file_id']}/content").content)
    }
    assert rows["published"]["choices"][0]["message"]["content"] == "echo: Ticket: No power"
    assert rows["published"]["model"] == "test-model"  # from model_config
    assert rows["pinned"]["choices"][0]["message"]["content"] == "echo: v2 Lid"
    assert rows["pinned"]["model"] == "other-model"  # the line's own field overrides model_config
    assert rows["literal"]["choices"][0]["message"]["content"] == "echo: plain"


def test_bad_prompt_lines_fail_validation_naming_the_line(api: httpx.Client) -> None:
    batch = run(
        api,
        [
            line("ok", prompt_slug="triage", variables={"product": "a", "ticket": "b"}),
            line("ghost", prompt_slug="nope", variables={}),
            line("old", prompt_slug="triage", prompt_version=7, variables={}),
            line("short", prompt_slug="triage", variables={"ticket": "b"}),
        ],
    )
    assert batch["status"] == "failed"
    errors = {(e["line"], e["code"], e["param"]) for e in batch["errors"]["data"]}
    assert errors == {
        (2, "prompt_not_found", "body.prompt_slug"),
        (3, "prompt_version_not_found", "body.prompt_version"),
        (4, "missing_variable", "body.variables"),
    }
    assert any("product" in e["message"] for e in batch["errors"]["data"])


def test_jsonl_helper_makes_a_batch_file_from_variable_sets(api: httpx.Client) -> None:
    sets = [{"product": "Kettle", "ticket": f"t{i}"} for i in range(3)]
    r = api.post("/v1/prompts/triage/jsonl", json={"variables": sets})
    assert r.status_code == 200
    lines = parse_jsonl(r.content)
    assert [x["custom_id"] for x in lines] == ["triage-0", "triage-1", "triage-2"]
    batch = run(api, lines)
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 3
    missing = api.post("/v1/prompts/triage/jsonl", json={"variables": [{"product": "x"}]})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "variables[0]"


def test_another_project_cannot_see_the_prompt(api: httpx.Client, server: Server) -> None:
    other = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.create_key('q')}"})
    assert other.get("/v1/prompts/triage").status_code == 404
    assert other.get("/v1/prompts").json()["data"] == []
