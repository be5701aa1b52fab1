"""`batchgate scheduling show | weight`: client commands for /v1/admin/scheduling (admin keys):
each upstream's adaptive concurrency now, and the projects' shares of batch capacity."""

from __future__ import annotations

from typing import Any

import click

from batchgate.cli.client import Conn, _table, client_command


@click.group()
def scheduling() -> None:
    """How batch capacity is shared (/v1/admin/scheduling; admin keys)."""


def _scheduling_rows(data: dict[str, Any]) -> None:
    upstreams = [
        [u["name"], f"{u['limit']}/{u['max_limit']}", u["in_flight"], u["waiting_interactive"], u["waiting_batch"],
         f"{u['batch_paused_for']:g} s" if u["batch_paused_for"] else ""]
        for u in data.get("upstreams") or []
    ]  # fmt: skip
    if upstreams:
        _table(["upstream", "limit/max", "in flight", "waiting sync", "waiting batch", "paused"], upstreams)
    _table(["project", "id", "weight"], [[p["name"], p["project_id"], f"{p['weight']:g}"] for p in data["projects"]])


@scheduling.command("show")
@client_command
def scheduling_show(conn: Conn) -> None:
    """Each upstream's concurrency limit now (AIMD), what waits for it, and every project's weight."""
    with conn.client() as client:
        data = client.scheduling.show()
    conn.emit(data, lambda: _scheduling_rows(data))


@scheduling.command("weight")
@click.argument("project")
@click.argument("weight", type=click.FloatRange(0, 1000, min_open=True))
@client_command
def scheduling_weight(conn: Conn, project: str, weight: float) -> None:
    """Set PROJECT's (name or id) share of batch capacity: its batches get capacity in
    proportion to WEIGHT (default 1) when projects compete."""
    with conn.client() as client:
        data = client.scheduling.set_weight(project, weight)
    conn.emit(data, lambda: _scheduling_rows(data))
