"""The console over HTTP, without a browser (tests/browser drives one): sessions end on
sign-out and when the key is revoked, a tampered cookie signs nobody in, upstream health
on the Models page, and a server without auth needs no sign-in."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
from support import ALL_SCOPES, Server


def signed_in(server: Server, key: str) -> tuple[httpx.Client, str]:
    """A client holding a console session for `key`, and its CSRF token."""
    client = httpx.Client(base_url=server.url, timeout=30)
    token = re.search(r"csrf=([0-9a-f]+)", client.get("/console/login").text).group(1)  # type: ignore[union-attr]
    answer = client.post(f"/console/login?csrf={token}", data={"api_key": key})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/batches"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert key not in cookie, "the cookie holds the key sealed, never in the clear"
    page = client.get("/console/batches")
    assert page.status_code == 200
    return client, re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]


def test_a_session_ends_on_sign_out_and_when_its_key_is_revoked(server: Server) -> None:
    admin = server.create_key("acme", *ALL_SCOPES)
    user = server.create_key("acme", "--name", "temp")
    client, token = signed_in(server, user)
    assert client.post(f"/console/logout?csrf={token}").status_code == 303
    assert client.get("/console/batches").headers.get("location") == "/console/login"

    client, _ = signed_in(server, user)
    keys = httpx.get(server.url + "/v1/admin/keys", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
    temp = next(k for k in keys if k["name"] == "temp")
    httpx.delete(server.url + f"/v1/admin/keys/{temp['id']}", headers={"Authorization": f"Bearer {admin}"})
    assert client.get("/console/batches").headers.get("location") == "/console/login"

    wrong = httpx.post(server.url + "/console/login", data={"api_key": "bg-nope"})
    assert wrong.status_code == 403, "no CSRF token: refused before the key is even looked at"


def test_a_tampered_cookie_signs_nobody_in(server: Server) -> None:
    client, _ = signed_in(server, server.create_key("acme"))
    sealed = client.cookies["bg_console"]
    client.cookies.set("bg_console", sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB"), path="/console")
    assert client.get("/console/batches").headers.get("location") == "/console/login"


def test_models_shows_upstream_health(start_server: Callable[..., Server], tmp_path: Path) -> None:
    data = tmp_path / "data"
    probe = Server(data).create_key("acme")  # the server itself is the healthy upstream
    config = tmp_path / "batchgate.toml"
    port = Server(data).port
    config.write_text(
        f'[backends.self]\nbase_url = "http://127.0.0.1:{port}/v1"\napi_key_env = "PROBE_KEY"\n'
        '[backends.gone]\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    server = Server(data, {"BATCHGATE_CONFIG": str(config), "PROBE_KEY": probe})
    server.port = port
    server.start()
    try:
        client, _ = signed_in(server, probe)
        assert "Asking each upstream" in client.get("/console/models").text
        health = client.get("/console/models/health").text
        assert re.search(r"self: <span[^>]*>healthy", health), health
        assert re.search(r"gone: <span[^>]*>unreachable", health), health
    finally:
        server.kill()


def test_without_auth_the_console_needs_no_sign_in(start_server: Callable[..., Server]) -> None:
    server = start_server(insecure=True)
    page = httpx.get(server.url + "/console/batches")
    assert page.status_code == 200 and "no auth" in page.text
    token = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    forged = httpx.post(server.url + "/console/prompts", data={"slug": "x", "user": "hi"})
    assert forged.status_code == 403
    made = httpx.post(
        server.url + f"/console/prompts?csrf={token}", data={"slug": "x", "user": "hi"}, cookies=page.cookies
    )
    assert made.status_code == 303


def test_keys_shows_each_keys_limits_and_budget_as_they_stand(server: Server) -> None:
    admin = server.create_key("acme", *ALL_SCOPES)
    user = server.create_key(
        "acme", "--name", "capped", "--limit", "requests=5/1m", "--budget-usd", "10", "--budget-period", "week"
    )
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for _ in range(2):
        answer = httpx.post(
            server.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {user}"}, timeout=60
        )
        assert answer.status_code == 200, answer.text
    client, _ = signed_in(server, admin)
    page = client.get("/console/keys").text
    row = page[page.index("capped") :]
    row = row[: row.index("</tr>")]
    assert "requests: 5 / " in row and "3 left now" in row, row  # 2 of 5 taken; the window drains 1 per 12 s
    assert "per week" in row and 'aria-label="Budget used this week"' in row and "used" in row, row
