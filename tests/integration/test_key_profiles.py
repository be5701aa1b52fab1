"""Key routing profiles on a real server: a key's synchronous requests and its batches'
lines resolve their model through its [profiles.NAME] of the routing config; a model
outside the profile is refused (404 model_not_found / a failed validation line) naming it;
the admin API and `batchgate keys` set it and refuse an unknown profile."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from support import TERMINAL, Server, chat_line, jsonl, wait_for

CONFIG = """
[models.m1]
backend = "local"
model = "up-m1"

[models.m2]
backend = "local"

[profiles.small]
models = ["m1"]

[profiles.small.routes.m3]
backend = "local"
model = "up-m3"
"""


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batchgate", "keys", *args, "--data-dir", str(server.data_dir)]
    return subprocess.run(command, env=server.env, capture_output=True, text=True)


def client(server: Server, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)


def run_batch(c: httpx.Client, lines: list[dict]) -> dict:
    file_id = c.post("/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = c.post("/v1/batches", json=body).json()["id"]
    return wait_for(lambda: (b := c.get(f"/v1/batches/{batch_id}").json())["status"] in TERMINAL and b)


def test_profiles_route_sync_and_batch_requests(start_server: Callable[..., Server], tmp_path: Path) -> None:
    config = tmp_path / "batchgate.toml"
    config.write_text(CONFIG)
    server = start_server(env={"BATCHGATE_CONFIG": str(config)})

    out = cli(server, "create", "--project", "p", "--routing-profile", "small")
    assert out.returncode == 0, out.stderr
    key_id, secret = out.stderr.split("created ")[1].split()[0], out.stdout.strip().splitlines()[-1]
    bad = cli(server, "create", "--project", "p", "--routing-profile", "nope")
    assert bad.returncode != 0 and "Unknown routing profile 'nope'" in bad.stderr and "small" in bad.stderr
    plain_secret = cli(server, "create", "--project", "p").stdout.strip().splitlines()[-1]
    profiled, plain = client(server, secret), client(server, plain_secret)

    # synchronous requests resolve through the profile
    assert profiled.post("/v1/chat/completions", json=chat("m1")).json()["model"] == "up-m1"
    assert profiled.post("/v1/chat/completions", json=chat("m3")).json()["model"] == "up-m3"
    refused = profiled.post("/v1/chat/completions", json=chat("m2"))
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    assert "'small'" in refused.json()["error"]["message"]
    streamed = profiled.post("/v1/chat/completions", json={**chat("m2"), "stream": True})
    assert streamed.status_code == 404 and "'small'" in streamed.json()["error"]["message"]
    # the whole config for a key without a profile
    assert plain.post("/v1/chat/completions", json=chat("m2")).status_code == 200
    assert plain.post("/v1/chat/completions", json=chat("m3")).json()["model"] == "m3"

    # a batch's lines resolve through its key's profile ...
    batch = run_batch(profiled, [chat_line("a", model="m1"), chat_line("b", model="m3")])
    assert batch["status"] == "completed", batch
    output = profiled.get(f"/v1/files/{batch['output_file_id']}/content").text
    models = {row["custom_id"]: row["response"]["body"]["model"] for row in map(json.loads, output.splitlines())}
    assert models == {"a": "up-m1", "b": "up-m3"}
    # ... and validation fails a line outside it, naming the profile
    failed = run_batch(profiled, [chat_line("a", model="m1"), chat_line("b", model="m2")])
    assert failed["status"] == "failed"
    errors = failed["errors"]["data"]
    assert [(e["code"], e["line"]) for e in errors] == [("model_not_found", 2)] and "'small'" in errors[0]["message"]

    # the admin API shows, sets and clears it; an unknown profile is a 400
    admin_secret = cli(server, "create", "--project", "ops", "--scope", "admin").stdout.strip().splitlines()[-1]
    admin = client(server, admin_secret)
    assert admin.get(f"/v1/admin/keys/{key_id}").json()["routing_profile"] == "small"
    unknown = admin.post(f"/v1/admin/keys/{key_id}", json={"routing_profile": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "routing_profile"
    made = admin.post("/v1/admin/keys", json={"project": "p", "routing_profile": "small"})
    assert made.status_code == 200 and made.json()["routing_profile"] == "small"
    cleared = admin.post(f"/v1/admin/keys/{key_id}", json={"routing_profile": None})
    assert cleared.status_code == 200 and cleared.json()["routing_profile"] is None
    assert profiled.post("/v1/chat/completions", json=chat("m2")).status_code == 200
    assert cli(server, "update", key_id, "--routing-profile", "small").returncode == 0
    assert "small" in cli(server, "show", key_id).stdout
    assert cli(server, "update", key_id, "--routing-profile", "nope").returncode != 0
