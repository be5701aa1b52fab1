"""The Python SDK (`batchgate.Client`, `batchgate.AsyncClient`) against a real server process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support import Server, free_port, parse_jsonl, wait_for
from upstreams import FaultProxy, Faults

from batchgate import AsyncClient, Client
from batchgate.sdk import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    CompletionResult,
    ConfigurationError,
    ConflictError,
    JobManifestError,
    NotFoundError,
    OutputPage,
    PayloadTooLargeError,
    ServerError,
    WaitTimeoutError,
)

FAST = {"poll_interval": 0.05, "timeout": 60}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One scripted-backend server for the module: each test starts a fresh one otherwise, and a
    server start is most of a test's time."""
    server = Server(tmp_path_factory.mktemp("sdk") / "data", {"BATCHGATE_SETTLE_GRACE": "0.5"}).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def key(srv: Server) -> str:
    return srv.create_key("sdk")


@pytest.fixture
def client(srv: Server, key: str) -> Iterator[Client]:
    with Client(srv.url, key) as c:
        yield c


def test_import_stays_light_and_never_loads_the_server() -> None:
    code = (
        "import sys, batchgate; assert 'httpx' not in sys.modules\n"
        "from batchgate import Client\n"
        "bad = [m for m in sys.modules if m.startswith(('batchgate.api', 'batchgate.core', 'batchgate.store',"
        " 'batchgate.engines', 'batchgate.app', 'fastapi'))]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_completions_return_a_result_with_one_row_per_item(client: Client) -> None:
    result = client.completions.classify(
        ["great", {"content": "awful", "metadata": {"lead": 7}}], categories=["pos", "neg"]
    )
    assert isinstance(result, CompletionResult) and result.model and result.operation == "label"
    assert [r["index"] for r in result.results] == [0, 1] and list(result) == result.results
    assert result[1]["metadata"] == {"content": "awful", "lead": 7}  # the item's fields, content included
    # the scripted backend echoes instead of answering with JSON: failed rows, the text kept in `raw`
    assert all(r["status"] == "failed" and r["raw"] for r in result)
    assert client.completions.classify(["x"], categories=["a", "b"], multi_label=True)[0]["id"] == "item-0000000"
    assert len(client.completions.extract(["Ann, 31"], extraction_instructions="name and age")) == 1
    assert len(client.completions.summarize(["a long text"], summary_instructions="one line")) == 1
    fields = [{"name": "industry", "type": "text", "description": "the industry"}]
    assert len(client.completions.enrich(["Acme builds rockets"], fields=fields)) == 1
    assert len(client.completions.run("run", ["x", "y"], user_prompt_template="Say {content}")) == 2
    assert client.completions.run("classify", ["x"], categories=["a"]).operation == "label"
    custom = client.completions.run(operation="feedback_analysis", items=["x"], user_prompt_template="{content}")
    assert custom.operation == "feedback_analysis" and custom[0]["operation"] == "feedback_analysis"


def test_errors_map_to_classes_with_code_and_request_id(srv: Server, client: Client) -> None:
    with pytest.raises(PayloadTooLargeError) as too_many:
        client.completions.classify(["x"] * 51, categories=["a"])
    assert too_many.value.status_code == 413 and too_many.value.request_id
    with pytest.raises(BadRequestError) as bad:
        client.completions.classify(["x"], categories=[])
    assert bad.value.param == "categories" and bad.value.status_code == 400 and bad.value.request_id
    with pytest.raises(NotFoundError) as missing:
        client.batches.retrieve("batch_nope")
    assert missing.value.status_code == 404 and missing.value.code and missing.value.request_id
    assert missing.value.request_id in str(missing.value)
    with Client(srv.url, "sk-wrong") as stranger, pytest.raises(AuthenticationError) as denied:
        stranger.batches.list()
    assert denied.value.status_code == 401 and denied.value.request_id


def test_batch_lifecycle_output_formats_and_openai_client(
    client: Client, srv: Server, key: str, tmp_path: Path
) -> None:
    items: list[Any] = [f"item {i}" for i in range(5)] + [{"content": "with meta", "metadata": {"lead": "L9"}}]
    batch = client.batches.submit("label", items, categories=["a", "b"], metadata={"source": "sdk-test"})
    assert (batch.status, batch.total_items, batch.operation, batch.done) == ("queued", 6, "label", False)
    done = client.batches.wait(batch.id, poll_interval=0.05, timeout=60, progress=True)  # a forced bar must not break
    assert done.status == "completed" and done.done and done.progress == 100.0
    assert done.completed_items + done.failed_items == 6 and done.model and done.usage.input_tokens > 0
    assert done.metadata == {"source": "sdk-test"}
    assert client.batches.retrieve(batch.id) == done

    page = client.batches.output(batch.id)
    assert isinstance(page, OutputPage)
    assert (page.id, page.status, page.offset, page.limit, page.total) == (batch.id, "completed", 0, 10_000, 6)
    rows = page.results
    assert [r["index"] for r in rows] == list(range(6))
    assert rows[5]["metadata"] == {"content": "with meta", "lead": "L9"}
    part = client.batches.output(batch.id, format="json", offset=2, limit=3)
    assert isinstance(part, OutputPage) and [r["index"] for r in part] == [2, 3, 4] and part.has_more
    jsonl_text = client.batches.output(batch.id, format="jsonl")
    assert isinstance(jsonl_text, str) and parse_jsonl(jsonl_text) == rows
    csv_text = client.batches.output(batch.id, format="csv")
    assert isinstance(csv_text, str) and csv_text.startswith("content,lead,id,status,error,label,confidence")
    assert len(csv_text.strip().splitlines()) == 7
    assert list(client.batches.iter_output(batch.id, page_size=4)) == rows
    assert list(client.batches.iter_output(batch.id, page_size=6)) == rows
    jsonl_path = client.batches.download_output(batch.id, tmp_path / "out" / "rows.jsonl", progress=False)
    assert parse_jsonl(jsonl_path.read_bytes()) == rows
    csv_path = client.batches.download_output(batch.id, tmp_path / "rows.csv", format="csv")
    assert csv_path.read_bytes().decode() == csv_text
    assert not list(tmp_path.glob("**/*.part"))

    assert batch.id in [b.id for b in client.batches.list(limit=100)]
    with pytest.raises(ConflictError) as conflict:
        client.batches.cancel(batch.id)
    assert conflict.value.code == "batch_not_cancellable"

    # the official client sees the same batch through /v1
    official = openai.OpenAI(base_url=srv.url + "/v1", api_key=key).batches.retrieve(batch.id)
    assert (official.id, official.status) == (batch.id, "completed")
    assert official.request_counts is not None and official.request_counts.total == 6
    assert official.metadata == {"source": "sdk-test"}

    finished = client.batches.submit_and_wait("summarize", ["x", "y"], progress=False, **FAST)
    assert finished.status == "completed" and finished.total_items == 2

    records = tmp_path / "leads.csv"
    records.write_text("name,body\nAnn,hello\nBob,world\n")
    uploaded = client.batches.upload_file(records, "label", categories=["a", "b"], content_column="body")
    assert uploaded.file_id and uploaded.total_items == 2
    client.batches.wait(uploaded.id, **FAST)
    uploaded_rows = client.batches.output(uploaded.id)
    assert isinstance(uploaded_rows, OutputPage)
    assert [r["metadata"] for r in uploaded_rows] == [
        {"name": "Ann", "body": "hello"},
        {"name": "Bob", "body": "world"},
    ]
    from_file = client.batches.submit(
        "label", file_id=uploaded.file_id, format="csv", content_column="body", categories=["a"]
    )
    assert from_file.total_items == 2


def test_a_running_batch_times_out_conflicts_and_cancels(client: Client) -> None:
    # 2,000 items keep even the echo backend busy for about a second
    batch = client.batches.submit("label", [f"x{i}" for i in range(2000)], categories=["a"])
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as timeout:
        client.batches.wait(batch.id, timeout=0.01, poll_interval=0.05)
    assert isinstance(timeout.value, TimeoutError) and time.monotonic() - started < 5
    with pytest.raises(ConflictError) as running:
        client.batches.output(batch.id)
    assert running.value.code == "batch_not_finished"
    # "processing" while the cancel settles the items still in flight, then "cancelled"
    assert client.batches.cancel(batch.id).status in ("processing", "cancelled")
    final = client.batches.wait(batch.id, **FAST)
    assert final.status == "cancelled" and final.completed_items + final.failed_items == 2000
    assert sum(1 for _ in client.batches.iter_output(batch.id, page_size=500)) == 2000


def test_files_and_prompts(client: Client, tmp_path: Path) -> None:
    data = (
        b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": []}}\n'
    )
    path = tmp_path / "input.jsonl"
    path.write_bytes(data)
    from_path = client.files.upload(path)
    from_bytes = client.files.upload(data, filename="b.jsonl")
    assert (from_path["filename"], from_path["bytes"], from_path["purpose"]) == ("input.jsonl", len(data), "batch")
    assert {from_path["id"], from_bytes["id"]} <= {f["id"] for f in client.files.list()}
    assert client.files.retrieve(from_bytes["id"])["filename"] == "b.jsonl"
    assert client.files.content(from_path["id"]) == data
    assert client.files.download(from_path["id"], tmp_path / "copy.jsonl").read_bytes() == data
    assert client.files.delete(from_bytes["id"])["deleted"] is True
    with pytest.raises(NotFoundError):
        client.files.retrieve(from_bytes["id"])

    messages = [{"role": "user", "content": "Triage: {{ticket}}"}]
    created = client.prompts.create("triage", name="Triage", messages=messages, model_config={"temperature": 0})
    assert (created["slug"], created["published_version"]) == ("triage", 1)
    assert "triage" in [p["slug"] for p in client.prompts.list()]
    v2 = client.prompts.create_version("triage", [{"role": "user", "content": "Urgent? {{ticket}} {{lang}}"}])
    assert v2["version"] == 2 and client.prompts.retrieve("triage")["published_version"] == 1
    assert [v["version"] for v in client.prompts.versions("triage")] == [1, 2]
    assert client.prompts.publish("triage", 2)["published_version"] == 2
    lines = parse_jsonl(
        client.prompts.jsonl("triage", [{"ticket": "t1", "lang": "en"}, {"ticket": "t2", "lang": "de"}])
    )
    assert len(lines) == 2 and lines[0]["body"]["prompt_slug"] == "triage"
    with pytest.raises(BadRequestError):
        client.prompts.create_version("triage", [], publish=True)


def test_retries(srv: Server, key: str) -> None:
    with FaultProxy(srv.url) as proxy, Client(proxy.url, key) as client:
        batch = client.batches.submit("label", ["x"], categories=["a"])

        proxy.reset()
        proxy.faults = Faults.always("503", max_per_key=2)
        assert client.batches.retrieve(batch.id).id == batch.id
        assert (proxy.count("503"), proxy.count(None)) == (2, 1)

        proxy.reset()
        proxy.faults = Faults.always("429", max_per_key=1, retry_after="0.5")
        started = time.monotonic()
        client.batches.retrieve(batch.id)
        assert time.monotonic() - started >= 0.5 and proxy.count("429") == 1

        proxy.reset()
        proxy.faults = Faults.always("reset", max_per_key=1)
        client.batches.list()  # a GET is retried after the connection drops
        assert proxy.count("reset") == 1 and proxy.count(None) == 1

        # a request that creates a batch is retried on 503 (refused before acting) …
        proxy.reset()
        proxy.faults = Faults.always("503", max_per_key=1)
        client.batches.submit("label", ["y"], categories=["a"])
        assert proxy.count(path="/api/batches") == 2
        # … but never on a 500 or a dropped connection: the batch may exist already
        for fault, error in (("500", ServerError), ("reset", APIConnectionError)):
            proxy.reset()
            proxy.faults = Faults.always(fault, max_per_key=1)
            with pytest.raises(error):
                client.batches.submit("label", [f"z-{fault}"], categories=["a"])
            assert proxy.count(path="/api/batches") == 1

        proxy.reset()
        proxy.faults = Faults.always("500")
        with Client(proxy.url, key, max_retries=1) as impatient, pytest.raises(ServerError) as failed:
            impatient.batches.list()
        assert failed.value.status_code == 500 and proxy.count("500") == 2

    with Client(f"http://127.0.0.1:{free_port()}", max_retries=1) as nowhere, pytest.raises(APIConnectionError):
        nowhere.batches.list()


def test_async_client(srv: Server, key: str, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"text": f"r{i}", "n": i}) + "\n" for i in range(5)))

    async def main() -> None:
        async with AsyncClient(srv.url, key) as client:
            result = await client.completions.classify(["a"], categories=["x", "y"])
            assert result[0]["index"] == 0 and result.model
            assert len(await client.completions.extract(["a"], extraction_instructions="all")) == 1
            assert len(await client.completions.summarize(["a"])) == 1
            assert (
                len(await client.completions.enrich(["a"], fields=[{"name": "f", "type": "text", "description": "d"}]))
                == 1
            )
            batch = await client.batches.submit_and_wait("label", ["a", "b", "c"], categories=["x"], **FAST)
            assert batch.status == "completed" and (await client.batches.retrieve(batch.id)).done
            page = await client.batches.output(batch.id)
            assert isinstance(page, OutputPage) and page.total == 3
            rows = page.results
            assert [r async for r in client.batches.iter_output(batch.id, page_size=2)] == rows
            path = await client.batches.download_output(batch.id, tmp_path / "a.jsonl")
            assert parse_jsonl(path.read_bytes()) == rows
            assert batch.id in [b.id for b in await client.batches.list()]
            with pytest.raises(ConflictError):
                await client.batches.cancel(batch.id)
            up = await client.batches.upload_file(records, "label", categories=["x"], content_column="text")
            assert (await client.batches.wait(up.id, **FAST)).total_items == 5

            f = await client.files.upload(b"hello\n", filename="h.txt")
            assert await client.files.content(f["id"]) == b"hello\n"
            assert (await client.files.retrieve(f["id"]))["bytes"] == 6 and await client.files.list()
            assert (await client.files.download(f["id"], tmp_path / "h.txt")).read_bytes() == b"hello\n"
            assert (await client.files.delete(f["id"]))["deleted"]

            await client.prompts.create("a-prompt", messages=[{"role": "user", "content": "{{x}}"}])
            await client.prompts.create_version("a-prompt", [{"role": "user", "content": "again {{x}}"}], publish=True)
            assert (await client.prompts.retrieve("a-prompt"))["published_version"] == 2
            assert len(await client.prompts.versions("a-prompt")) == 2 and await client.prompts.list()
            assert (await client.prompts.publish("a-prompt", 1))["published_version"] == 1
            assert (await client.prompts.jsonl("a-prompt", [{"x": "1"}])).count("\n") == 1

            job = client.jobs.run(
                records,
                "label",
                chunk_size=2,
                manifest=tmp_path / "job.json",
                content_column="text",
                categories=["x"],
                poll_interval=0.05,
            )
            chunks = [(chunk, rows) async for chunk, rows in job]
            assert [c for c, _ in chunks] == [0, 1, 2]
            ids = [r["custom_id"] for _, rows in chunks for r in rows]
            assert ids == ["0-0", "0-1", "1-0", "1-1", "2-0"]
            assert [r["metadata"]["n"] for _, rows in chunks for r in rows] == [0, 1, 2, 3, 4]

    asyncio.run(main())


def test_profiles_and_environment(srv: Server, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        f'[local]\nbase_url = "{srv.url}/v1/"\napi_key_env = "SDK_TEST_KEY"\n\n[inline]\nbase_url = "{srv.url}"\napi_key = "{key}"\n'
        "timeout = 12.5\n\n[slow]\ntimeout = -1\n"
    )
    monkeypatch.setenv("BATCHGATE_PROFILES", str(profiles))
    monkeypatch.setenv("SDK_TEST_KEY", key)
    for name in ("local", "inline"):
        with Client.from_profile(name) as client:
            assert client.base_url == srv.url
            client.batches.list()
    with Client.from_profile("inline") as client, Client.from_profile("inline", timeout=3) as overridden:
        assert (client._http.timeout.read, overridden._http.timeout.read) == (12.5, 3)
    with pytest.raises(ConfigurationError, match="timeout"):
        Client.from_profile("slow")
    with pytest.raises(ConfigurationError, match="no profile 'prod'"):
        Client.from_profile("prod")
    monkeypatch.delenv("SDK_TEST_KEY")
    with pytest.raises(ConfigurationError, match="SDK_TEST_KEY"):
        Client.from_profile("local")

    monkeypatch.setenv("BATCHGATE_BASE_URL", srv.url)
    monkeypatch.setenv("BATCHGATE_API_KEY", key)
    with Client() as client:
        assert client.batches.list() is not None
    monkeypatch.delenv("BATCHGATE_BASE_URL")
    assert Client().base_url == "http://127.0.0.1:8000"


JOB_SCRIPT = """
import json, sys, time
import httpx
from batchgate import Client

url, key, manifest, out, delay = sys.argv[1:6]

class SlowSubmit(httpx.HTTPTransport):
    # pauses after each batch is created, before the job can record it: a kill then lands in
    # the worst window, between the server accepting a chunk and the manifest naming it
    def handle_request(self, request):
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path == "/api/batches":
            time.sleep(float(delay))
        return response

items = [f"record {i}" for i in range(23)]
with Client(url, key, transport=SlowSubmit()) as client, open(out, "a") as f:
    for chunk, rows in client.jobs.run(items, "label", chunk_size=5, manifest=manifest, categories=["a", "b"], poll_interval=0.05):
        for row in rows:
            f.write(json.dumps({"chunk": chunk, "custom_id": row["custom_id"]}) + "\\n")
"""


def test_chunked_job_killed_and_resumed_submits_each_chunk_once(srv: Server, tmp_path: Path) -> None:
    key = srv.create_key("jobs")  # a project of its own: its batches are exactly the job's
    script, manifest, out = tmp_path / "job.py", tmp_path / "job.json", tmp_path / "rows.jsonl"
    script.write_text(textwrap.dedent(JOB_SCRIPT))

    def run(delay: float) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), srv.url, key, str(manifest), str(out), str(delay)])

    def recorded() -> int:
        return len(json.loads(manifest.read_text())["chunks"]) if manifest.exists() else 0

    first = run(1.0)
    # kill in the worst place: the server has accepted a chunk the manifest does not name yet
    wait_for(lambda: recorded() >= 1 and len(_all_batches(srv.url, key)) > recorded(), timeout=30, interval=0.05)
    first.kill()
    first.wait(10)
    assert 1 <= recorded() < 5, "killed mid-way"
    assert len(_all_batches(srv.url, key)) == recorded() + 1

    assert run(0).wait(60) == 0
    entries = json.loads(manifest.read_text())["chunks"]
    assert [e["chunk"] for e in entries] == [0, 1, 2, 3, 4] and [e["items"] for e in entries] == [5, 5, 5, 5, 3]
    on_server = _all_batches(srv.url, key)
    assert sorted(on_server) == sorted(e["batch_id"] for e in entries), "each chunk submitted exactly once"
    rows = parse_jsonl(out.read_bytes())
    assert sorted({r["custom_id"] for r in rows}) == sorted(
        f"{c}-{i}" for c in range(5) for i in range(5 if c < 4 else 3)
    )

    # a manifest belongs to one job: other records or parameters are refused, not mixed in
    with Client(srv.url, key) as client:
        with pytest.raises(JobManifestError) as other_params:
            next(
                client.jobs.run(
                    [f"record {i}" for i in range(23)], "label", chunk_size=5, manifest=manifest, categories=["c"]
                )
            )
        assert other_params.value.code == "manifest_params_mismatch"
        with pytest.raises(JobManifestError) as other_records:
            next(client.jobs.run(["something else"], "label", chunk_size=5, manifest=manifest, categories=["a", "b"]))
        assert other_records.value.code == "manifest_source_mismatch"
    assert len(_all_batches(srv.url, key)) == 5


def _all_batches(url: str, key: str) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        page = httpx.get(url + "/api/batches", params=params, headers={"Authorization": f"Bearer {key}"}).json()
        ids += [b["batch_id"] for b in page["data"]]
        if not page["has_more"]:
            return ids
        after = page["last_id"]


@pytest.mark.slow
def test_classify_with_the_local_model(start_server: Callable[..., Server]) -> None:
    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": "smollm2-135m", "BATCHGATE_ENGINE_SLOTS": "4"}
    server = start_server(env, insecure=True)
    with Client(server.url, timeout=300) as client:
        rows = client.completions.classify(
            ["I love this phone", "Terrible, broke in a day"], categories=["positive", "negative"]
        )
    for row in rows:
        assert row["status"] == "succeeded", row
        assert row["result"]["label"] in ("positive", "negative")
        assert row["result"]["confidence"] is None or 0 < row["result"]["confidence"] <= 1
