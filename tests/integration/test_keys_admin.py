"""Keys on a real server: scopes per route group, allowed models, expiry, revocation; the
admin API (only for `admin` keys) and the `batchgate keys` commands."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from support import TERMINAL, Server, chat_line, jsonl, wait_for

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batchgate", "keys", *args, "--data-dir", str(server.data_dir)]
    return subprocess.run(command, env=server.env, capture_output=True, text=True)


def created(server: Server, project: str, *flags: str) -> tuple[str, str]:
    """(id, secret) of a new key."""
    out = cli(server, "create", "--project", project, *flags)
    assert out.returncode == 0, out.stderr
    return out.stderr.split("created ")[1].split()[0], out.stdout.strip().splitlines()[-1]


def key(server: Server, project: str, *flags: str) -> str:
    return created(server, project, *flags)[1]


def client(server: Server, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)


def code(r: httpx.Response) -> tuple[int, str | None]:
    return r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else None


def upload(c: httpx.Client) -> httpx.Response:
    return c.post("/v1/files", files={"file": ("in.jsonl", jsonl([chat_line("a")]))}, data={"purpose": "batch"})


def test_scopes_are_enforced_per_route_group(server: Server) -> None:
    batch_only = client(server, key(server, "p", "--scope", "batch"))
    sync_only = client(server, key(server, "p", "--scope", "sync"))
    reader = client(server, key(server, "p", "--scope", "read"))
    assert code(batch_only.post("/v1/chat/completions", json=CHAT)) == (403, "missing_scope")
    assert upload(batch_only).status_code == 200
    assert sync_only.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert code(upload(sync_only)) == (403, "missing_scope")
    assert code(sync_only.get("/v1/batches")) == (403, "missing_scope"), "listing needs read"
    assert reader.get("/v1/batches").status_code == 200 and reader.get("/v1/files").status_code == 200
    assert code(reader.post("/v1/chat/completions", json=CHAT)) == (403, "missing_scope")
    assert code(reader.get("/v1/admin/keys")) == (403, "missing_scope")


def test_allowed_models_and_expiry(server: Server) -> None:
    limited = client(server, key(server, "p", "--model", "m1", "--model", "m2"))
    assert limited.post("/v1/chat/completions", json=CHAT).status_code == 200
    refused = limited.post("/v1/chat/completions", json={**CHAT, "model": "m3", "stream": True})
    assert code(refused) == (403, "model_not_allowed") and refused.json()["error"]["param"] == "model"
    assert code(limited.post("/v1/embeddings", json={"model": "m3", "input": "x"})) == (403, "model_not_allowed")
    # a batch's lines are checked against the models of the key that created it
    data = jsonl([chat_line("a", model="m1"), chat_line("b", model="m3")])
    file_id = limited.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = limited.post("/v1/batches", json=body).json()["id"]
    batch = wait_for(lambda: (b := limited.get(f"/v1/batches/{batch_id}").json())["status"] in TERMINAL and b)
    assert batch["status"] == "failed"
    assert [(e["code"], e["line"]) for e in batch["errors"]["data"]] == [("model_not_allowed", 2)]
    key_id, secret = created(server, "p", "--expires-at", str(int(time.time()) + 600))
    soon = client(server, secret)
    assert soon.get("/v1/files").status_code == 200
    assert cli(server, "update", key_id, "--expires-at", str(int(time.time()) - 1)).returncode == 0
    assert code(soon.get("/v1/files")) == (401, "expired_api_key")
    assert code(soon.post("/v1/chat/completions", json=CHAT)) == (401, "expired_api_key")


def test_the_admin_api_manages_keys_and_projects(server: Server) -> None:
    admin = client(server, key(server, "ops", "--scope", "admin", "--scope", "read"))
    created = admin.post(
        "/v1/admin/keys", json={"project": "team-a", "name": "pipeline", "scopes": ["batch"], "allowed_models": ["m1"]}
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["object"] == "api_key" and body["secret"].startswith("bg-") and body["scopes"] == ["batch"]
    new = client(server, body["secret"])
    assert upload(new).status_code == 200
    assert code(new.post("/v1/chat/completions", json=CHAT)) == (403, "missing_scope")
    assert code(new.get("/v1/admin/keys")) == (403, "missing_scope")

    shown = admin.get(f"/v1/admin/keys/{body['id']}").json()
    assert shown["secret"] is None and shown["project"] == "team-a" and shown["allowed_models"] == ["m1"]
    updated = admin.post(f"/v1/admin/keys/{body['id']}", json={"scopes": ["batch", "sync"], "allowed_models": None})
    assert updated.status_code == 200 and updated.json()["scopes"] == ["batch", "sync"]
    assert updated.json()["allowed_models"] is None and updated.json()["name"] == "pipeline", "others unchanged"
    assert new.post("/v1/chat/completions", json={**CHAT, "model": "other"}).status_code == 200
    assert code(admin.post(f"/v1/admin/keys/{body['id']}", json={"scopes": ["root"]}))[0] == 400
    assert code(admin.post("/v1/admin/keys", json={"project": "x", "unknown": 1}))[0] == 400
    assert {k["id"] for k in admin.get("/v1/admin/keys").json()["data"]} >= {body["id"]}
    assert admin.delete(f"/v1/admin/keys/{body['id']}").json() == {
        "object": "api_key.deleted",
        "id": body["id"],
        "deleted": True,
    }
    assert code(new.get("/v1/files")) == (401, "invalid_api_key")
    assert code(admin.delete(f"/v1/admin/keys/{body['id']}")) == (404, "not_found")
    assert code(admin.get("/v1/admin/keys/key_nope")) == (404, "not_found")

    assert admin.post("/v1/admin/projects", json={"name": "team-b"}).json()["name"] == "team-b"
    names = [p["name"] for p in admin.get("/v1/admin/projects").json()["data"]]
    assert {"ops", "team-a", "team-b"} <= set(names)


def test_the_keys_commands_show_and_update(server: Server) -> None:
    key_id, _ = created(server, "p", "--name", "ci", "--scope", "batch", "--model", "m1")
    shown = cli(server, "show", key_id)
    assert shown.returncode == 0 and "batch" in shown.stdout and "m1" in shown.stdout
    updated = cli(server, "update", key_id, "--scope", "sync", "--scope", "read", "--any-model", "--name", "ci2")
    assert updated.returncode == 0, updated.stderr
    assert "sync,read" in updated.stdout and "any" in updated.stdout and "ci2" in updated.stdout
    assert cli(server, "update", key_id, "--scope", "root").returncode != 0
    bad = cli(server, "show", "key_nope")
    assert bad.returncode == 1 and "key_nope" in bad.stderr
    assert cli(server, "revoke", key_id).returncode == 0
    assert cli(server, "update", key_id, "--name", "x").returncode == 1, "a revoked key is not changed"
