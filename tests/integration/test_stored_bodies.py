"""Opt-in stored bodies for request logs on a real server: off by default (nothing kept),
an admin opts a project in with a cap, GET /v1/logs/{id} returns the bodies cut at the
cap and marked truncated; another project cannot read them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from support import Server


def secret(server: Server, project: str, *flags: str) -> str:
    command = [sys.executable, "-m", "batchgate", "keys", "create", "--project", project, *flags]
    out = subprocess.run([*command, "--data-dir", str(server.data_dir)], env=server.env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def newest_log(c: httpx.Client) -> dict:
    return c.get("/v1/logs", params={"limit": 1}).json()["data"][0]


def test_bodies_are_kept_only_when_the_project_opts_in(server: Server) -> None:
    user = client(server, secret(server, "team"))
    admin = client(server, secret(server, "ops", "--scope", "admin", "--scope", "read"))
    other = client(server, secret(server, "other"))
    chat = {"model": "m1", "messages": [{"role": "user", "content": "hello there"}]}

    assert user.post("/v1/chat/completions", json=chat).status_code == 200
    log = newest_log(user)
    shown = user.get(f"/v1/logs/{log['id']}").json()
    assert shown["id"] == log["id"] and shown["request_body"] is None and shown["response_body"] is None
    assert admin.get("/v1/admin/projects/team/logging").json()["store_bodies"] is False

    opted = admin.post("/v1/admin/projects/team/logging", json={"store_bodies": True, "body_cap_bytes": 4096})
    assert opted.status_code == 200 and opted.json()["body_cap_bytes"] == 4096
    assert admin.post("/v1/admin/projects/nope/logging", json={"store_bodies": True}).status_code == 404
    assert (
        admin.post("/v1/admin/projects/team/logging", json={"store_bodies": True, "body_cap_bytes": 0}).status_code
        == 400
    )
    assert user.post("/v1/admin/projects/team/logging", json={"store_bodies": True}).status_code == 403
    time.sleep(5.5)  # the setting applies within 5 s (cached per process)

    answer = user.post("/v1/chat/completions", json=chat)
    log = newest_log(user)
    shown = user.get(f"/v1/logs/{log['id']}").json()
    assert '"hello there"' in shown["request_body"] and shown["response_body"] == answer.text
    assert not shown["request_body_truncated"] and not shown["response_body_truncated"]
    assert other.get(f"/v1/logs/{log['id']}").status_code == 404, "another project's log"
    assert admin.get(f"/v1/logs/{log['id']}").json()["request_body"] == shown["request_body"]

    admin.post("/v1/admin/projects/team/logging", json={"store_bodies": True, "body_cap_bytes": 10})
    time.sleep(5.5)
    user.post("/v1/chat/completions", json=chat)
    cut = user.get(f"/v1/logs/{newest_log(user)['id']}").json()
    assert len(cut["request_body"].encode()) == 10 and cut["request_body_truncated"]
    assert len(cut["response_body"].encode()) <= 10 and cut["response_body_truncated"]
    assert user.get("/v1/logs/log_999999999").status_code == 404
    assert user.get("/v1/logs/nonsense").status_code == 404
