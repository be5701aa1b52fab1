"""Key limit and budget fields on a real server: the admin API (create, show, update,
clear; bad values refused with 400 naming the field) and `batchgate keys create|update`
flags."""

from __future__ import annotations

import httpx
from support import Server
from test_keys_admin import cli, client, code, created, key

LIMITS = [
    {"kind": "requests", "limit": 600, "window_s": 60},
    {"kind": "total_tokens", "limit": 100000, "window_s": 3600},
]


def admin(server: Server) -> httpx.Client:
    return client(server, key(server, "ops", "--scope", "admin"))


def test_the_admin_api_sets_shows_updates_and_clears_limits_and_budgets(server: Server) -> None:
    ops = admin(server)
    body = {"project": "team", "limits": LIMITS, "max_parallel_requests": 8, "budget_usd": 25.0}
    made = ops.post("/v1/admin/keys", json={**body, "budget_period": "week", "budget_soft_usd": 20})
    assert made.status_code == 200, made.text
    k = made.json()
    assert k["limits"] == LIMITS and k["max_parallel_requests"] == 8
    assert (k["budget_usd"], k["budget_period"], k["budget_soft_usd"]) == (25.0, "week", 20.0)
    shown = ops.get(f"/v1/admin/keys/{k['id']}").json()
    assert shown["limits"] == LIMITS and shown["budget_period"] == "week"

    one = [{"kind": "output_tokens", "limit": 5000, "window_s": 60}]
    updated = ops.post(f"/v1/admin/keys/{k['id']}", json={"limits": one, "budget_usd": 30}).json()
    assert updated["limits"] == one and updated["budget_usd"] == 30.0 and updated["max_parallel_requests"] == 8
    cleared = ops.post(
        f"/v1/admin/keys/{k['id']}", json={"limits": [], "max_parallel_requests": None, "budget_usd": None}
    ).json()
    assert cleared["limits"] == [] and cleared["max_parallel_requests"] is None and cleared["budget_usd"] is None
    assert cleared["budget_soft_usd"] == 20.0 and cleared["budget_period"] == "week", "fields not named stay"
    plain = ops.post("/v1/admin/keys", json={"project": "team"}).json()
    assert (plain["limits"], plain["max_parallel_requests"], plain["budget_usd"], plain["budget_period"]) == (
        [],
        None,
        None,
        "month",
    )


def test_bad_limits_and_budgets_are_refused_naming_the_field(server: Server) -> None:
    ops = admin(server)
    for body, param in [
        ({"limits": [{"kind": "bytes", "limit": 1, "window_s": 60}]}, "limits[0].kind"),
        ({"limits": [{"kind": "requests", "limit": 0, "window_s": 60}]}, "limits[0].limit"),
        ({"limits": [{"kind": "requests", "limit": 1, "window_s": 0}]}, "limits[0].window_s"),
        ({"max_parallel_requests": 0}, "max_parallel_requests"),
        ({"budget_period": "year"}, "budget_period"),
        ({"budget_usd": -1}, "budget_usd"),
    ]:
        refused = ops.post("/v1/admin/keys", json={"project": "p", **body})
        assert code(refused) == (400, refused.json()["error"]["code"]) and refused.status_code == 400, body
        assert refused.json()["error"]["param"] == param, refused.text
    twice = [{"kind": "requests", "limit": 1, "window_s": 60}, {"kind": "requests", "limit": 2, "window_s": 60}]
    refused = ops.post("/v1/admin/keys", json={"project": "p", "limits": twice})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "limits[1]"
    soft_over = ops.post("/v1/admin/keys", json={"project": "p", "budget_usd": 5, "budget_soft_usd": 6})
    assert soft_over.status_code == 400 and soft_over.json()["error"]["param"] == "budget_soft_usd"


def test_the_keys_commands_set_every_limit_and_budget_field(server: Server) -> None:
    key_id, _ = created(
        server, "p", "--limit", "requests=600/1m", "--limit", "input_tokens=5000/1h", "--max-parallel", "4",
        "--budget-usd", "12.5", "--budget-period", "day", "--budget-soft-usd", "10",
    )  # fmt: skip
    shown = cli(server, "show", key_id)
    assert shown.returncode == 0, shown.stderr
    for text in ("requests=600/1m", "input_tokens=5000/1h", "$12.5/day", "soft $10", "$0 today (UTC); $12.5 left"):
        assert text in shown.stdout, (text, shown.stdout)
    updated = cli(server, "update", key_id, "--limit", "total_tokens=90/30s", "--no-max-parallel", "--no-budget")
    assert updated.returncode == 0, updated.stderr
    assert "total_tokens=90/30s" in updated.stdout and "requests=600" not in updated.stdout
    assert "$" not in updated.stdout
    assert cli(server, "update", key_id, "--no-limits").returncode == 0
    assert "total_tokens" not in cli(server, "show", key_id).stdout
    bad = cli(server, "create", "--project", "p", "--limit", "requests=5")
    assert bad.returncode == 2 and "KIND=LIMIT/WINDOW" in bad.stderr
    assert cli(server, "create", "--project", "p", "--budget-usd", "1", "--budget-soft-usd", "2").returncode == 1
