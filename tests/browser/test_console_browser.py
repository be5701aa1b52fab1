"""The console, driven in headless chromium like a person would use it: sign in, write a
prompt, run a batch from it with 3 variable sets and watch it finish without reloading,
download its output, find it in Request logs and Usage; cancel a running batch; a key
without `admin` cannot open Keys; forged form posts are refused. Each page is
screenshotted (conftest.Shots)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from support import Server, chat_line, jsonl

VARIABLE_SETS = [
    {"name": "Ada", "topic": "engines"},
    {"name": "Grace", "topic": "compilers"},
    {"name": "Linus", "topic": "kernels"},
]


def create_prompt(page: Any, server: Server) -> None:
    page.goto(server.url + "/console/prompts")
    page.get_by_label("Slug").fill("greet")
    page.get_by_label("Name", exact=True).fill("Greeting")
    page.get_by_label("System message").fill("You write one friendly sentence.")
    page.get_by_label("User message").fill("Say hello to {{name}} about {{topic}}.")
    # mock.sleep: the scripted backend takes 0.5 s a line, so progress moves visibly
    page.get_by_label("model_config").fill('{"model": "demo-model", "max_tokens": 40, "mock": {"sleep": 0.5}}')
    page.get_by_role("button", name=re.compile("Create prompt")).click()
    page.wait_for_url("**/console/prompts/greet")
    # a second version, to see the differences between two
    page.get_by_label("Messages (JSON array)").fill(
        json.dumps(
            [
                {"role": "system", "content": "You write one short, friendly sentence."},
                {"role": "user", "content": "Say hello to {{name}}, who loves {{topic}}."},
            ]
        )
    )
    page.get_by_role("button", name="Create version").click()
    page.wait_for_url("**/console/prompts/greet")
    assert page.locator("pre.diff .d-add").count() >= 1


def test_a_prompt_batch_from_sign_in_to_usage(console: Server, sign_in: Any, shots: Any, tmp_path: Path) -> None:
    page = sign_in(console, console.admin_key)  # type: ignore[attr-defined]
    create_prompt(page, console)
    shots.take(page, "prompt")

    page.goto(console.url + "/console/jobs/new?tab=prompt")
    page.get_by_label("Prompt", exact=True).select_option("greet")
    page.get_by_label("Version").fill("1")
    page.get_by_label(re.compile("^Variable sets")).fill(json.dumps(VARIABLE_SETS))
    page.get_by_role("button", name="Preview lines").click()
    preview = page.get_by_test_id("prompt-preview")
    preview.wait_for()
    lines = [json.loads(line) for line in preview.inner_text().strip().splitlines()]
    assert [line["body"]["variables"] for line in lines] == VARIABLE_SETS
    assert {line["body"]["prompt_slug"] for line in lines} == {"greet"}
    shots.take(page, "new-job-from-prompt")

    page.get_by_role("button", name="Create batch").click()
    page.wait_for_url(re.compile(r".*/console/batches/batch_\w+$"))
    batch_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.notReloaded = true")  # gone if the page reloads
    bar = page.locator("#batch-bar")
    seen: list[str] = []
    deadline = time.time() + 60
    while time.time() < deadline:
        count = page.get_by_test_id("progress-count").inner_text()
        if not seen or seen[-1] != count:
            seen.append(count)
        if count.startswith("3/3") and page.get_by_role("link", name="Download output").count():
            break
        time.sleep(0.1)
    assert seen[-1] == "3/3 (100%)", seen
    assert any(not s.startswith("3/3") for s in seen), f"progress was only ever seen complete: {seen}"
    assert bar.get_attribute("value") == "3" and bar.get_attribute("max") == "3"
    assert page.evaluate("window.notReloaded") is True, "the page reloaded"
    cost = page.get_by_test_id("batch-cost").inner_text()
    assert cost.startswith("$") and cost != "$0"
    page.reload()  # the rows and the output preview, now that it ended
    assert page.locator("table.data tbody tr").count() == 3
    shots.take(page, "batch-detail")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download output").click()
    saved = tmp_path / "output.jsonl"
    download.value.save_as(saved)
    output = [json.loads(line) for line in saved.read_text().splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["greet-0", "greet-1", "greet-2"]
    assert all(o["response"]["status_code"] == 200 for o in output)

    page.goto(console.url + "/console/batches")
    row = page.get_by_role("row").filter(has_text=batch_id)
    assert "completed" in row.inner_text() and "3/3" in row.inner_text()
    shots.take(page, "batches")

    page.goto(console.url + "/console/logs")
    page.get_by_label("Batch").fill(batch_id)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/console/logs?*")
    rows = page.locator("#logs tbody tr")
    assert rows.count() == 3
    assert all(batch_id in text and "demo-model" in text for text in rows.all_inner_texts())
    shots.take(page, "request-logs")

    page.goto(console.url + "/console/usage")
    assert page.get_by_test_id("usage-cost").inner_text() == cost  # the only priced batch so far
    assert page.get_by_role("row").filter(has_text="demo-model").first.is_visible()
    page.wait_for_selector("#chart-cost canvas")  # uPlot drew the charts (vendored, no network)
    shots.take(page, "usage")
    csv = page.request.get(console.url + "/console/usage.csv").text()
    assert "demo-model" in csv.splitlines()[1]

    for name, path in (("models", "/console/models"), ("keys", "/console/keys"), ("prompts", "/console/prompts")):
        page.goto(console.url + path)
        shots.take(page, name)


def test_cancel_a_running_batch(console: Server, sign_in: Any, tmp_path: Path) -> None:
    page = sign_in(console, console.admin_key)  # type: ignore[attr-defined]
    lines = [chat_line(f"slow-{i}", model="demo-model", mock={"sleep": 1.0}) for i in range(20)]
    upload = tmp_path / "slow.jsonl"
    upload.write_bytes(jsonl(lines))
    page.goto(console.url + "/console/jobs/new?tab=upload")
    page.get_by_label("JSONL file", exact=True).set_input_files(str(upload))
    page.get_by_role("button", name="Upload and create batch").click()
    page.wait_for_url(re.compile(r".*/console/batches/batch_\w+$"))
    page.get_by_text("in progress").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Pause").click()
    page.locator("#batch-progress .status", has_text="paused").wait_for()
    page.get_by_role("button", name="Resume").click()
    page.get_by_role("button", name="Pause").wait_for()
    assert page.locator("#batch-progress .status", has_text="paused").count() == 0
    page.get_by_role("button", name="Cancel batch").click()
    page.wait_for_url(re.compile(r".*/console/batches/batch_\w+$"))
    page.locator("#batch-progress .status", has_text="cancelled").wait_for(timeout=60_000)
    succeeded = page.locator("#batch-progress dl div", has_text="Succeeded").locator("dd").inner_text()
    assert int(succeeded) < 20, "cancelled before every line ran; the rest settle as failed (cancelled)"
    cancelled_id = page.url.rsplit("/", 1)[1]
    page.get_by_role("button", name="Retry failed lines").click()  # a new batch of the lines that did not run
    page.wait_for_url(re.compile(r".*/console/batches/batch_\w+$"))
    assert page.url.rsplit("/", 1)[1] != cancelled_id
    page.get_by_role("link", name=f"Retry of {cancelled_id}").wait_for()
    total = page.get_by_test_id("progress-count").inner_text().split("/")[1].split(" ")[0]
    assert total in ("0", str(20 - int(succeeded))), total  # 0 while it validates


def test_a_key_without_admin_cannot_open_keys(console: Server, sign_in: Any, shots: Any) -> None:
    page = sign_in(console, console.reader_key)  # type: ignore[attr-defined]
    assert page.get_by_role("link", name="Keys").count() == 0
    response = page.goto(console.url + "/console/keys")
    assert response is not None and response.status == 403
    assert "admin" in page.inner_text("main")
    page.goto(console.url + "/console/login")
    shots.take(page, "sign-in")


def test_forged_form_posts_are_refused(console: Server, sign_in: Any) -> None:
    page = sign_in(console, console.admin_key)  # type: ignore[attr-defined]
    lines = [chat_line(f"keep-{i}", model="demo-model", mock={"sleep": 1.0}) for i in range(5)]
    created = httpx.post(
        console.url + "/v1/files",
        headers={"Authorization": f"Bearer {console.admin_key}"},  # type: ignore[attr-defined]
        files={"file": ("in.jsonl", jsonl(lines))},
        data={"purpose": "batch"},
    ).json()
    batch = httpx.post(
        console.url + "/v1/batches",
        headers={"Authorization": f"Bearer {console.admin_key}"},  # type: ignore[attr-defined]
        json={"input_file_id": created["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    ).json()
    cancel = f"{console.url}/console/batches/{batch['id']}/cancel"
    # the signed-in browser's own cookies go along with each of these
    no_token = page.request.post(cancel)
    wrong_token = page.request.post(cancel + "?csrf=" + "0" * 40)
    token = page.locator("body").get_attribute("hx-headers")
    assert token is not None
    real = json.loads(token)["X-CSRF-Token"]
    other_site = page.request.post(cancel + "?csrf=" + real, headers={"Origin": "https://evil.example"})
    assert [r.status for r in (no_token, wrong_token, other_site)] == [403, 403, 403]
    # a form on another site, submitted in the browser: SameSite=Strict keeps the cookie
    # home, and it has no token either
    page.set_content(f'<form method="post" action="{cancel}"><button>go</button></form>')
    page.get_by_role("button", name="go").click()
    page.wait_for_load_state()
    assert "Refused" in page.content()
    status = httpx.get(
        console.url + f"/v1/batches/{batch['id']}",
        headers={"Authorization": f"Bearer {console.admin_key}"},  # type: ignore[attr-defined]
    ).json()["status"]
    assert status not in ("cancelling", "cancelled")
