"""`batchgate batches pause | resume | retry` and `batchgate webhooks ...`: client commands
for the lifecycle extensions (the server's /v1/batches/{id}/pause|resume|retry and
/v1/webhooks)."""

from __future__ import annotations

from typing import Any

import click

from batchgate.cli.client import Conn, _table, _when, batches, client_command


def _v1_batch_rows(items: list[dict[str, Any]]) -> None:
    rows = []
    for b in items:
        counts = b.get("request_counts") or {}
        state = b.get("status", "") + (" (paused)" if b.get("paused_at") else "")
        links = ", ".join(f"{k}={v}" for k, v in (b.get("metadata") or {}).items() if k in ("retry_of", "retried_by"))
        rows.append([b.get("id"), state, f"{counts.get('completed', 0)}/{counts.get('total', 0)}", links])
    _table(["id", "status", "done", "links"], rows)


def _batch_action(action: str, help_text: str) -> None:
    @batches.command(action, help=help_text)
    @click.argument("batch_id")
    @client_command
    def command(conn: Conn, batch_id: str) -> None:
        with conn.client() as client:
            batch = getattr(client.batches, action)(batch_id)
        conn.emit(batch, lambda: _v1_batch_rows([batch]))


_batch_action("pause", "Pause a batch: no new line starts (running ones finish); its window keeps running.")
_batch_action("resume", "Resume a paused batch.")
_batch_action("retry", "A new batch of the failed lines of a finished /v1/batches batch (same custom_ids); prints it.")


@click.group()
def webhooks() -> None:
    """Webhook endpoints told when a batch ends (/v1/webhooks)."""


def _webhook_rows(items: list[dict[str, Any]]) -> None:
    rows = [[w.get("id"), w.get("url"), ",".join(w.get("events") or []), _when(w.get("created_at"))] for w in items]
    _table(["id", "url", "events", "created"], rows)


@webhooks.command("create")
@click.argument("url")
@click.option("--event", "events", multiple=True, help="batch.completed, batch.failed, … (repeatable; default: all).")
@click.option("--description", default=None)
@client_command
def webhooks_create(conn: Conn, url: str, events: tuple[str, ...], description: str | None) -> None:
    """Add an endpoint; prints its signing secret (whsec_…), shown this once."""
    with conn.client() as client:
        hook = client.webhooks.create(url, list(events) or None, description)

    def human() -> None:
        _webhook_rows([hook])
        click.echo(f"secret (shown once): {hook['secret']}")

    conn.emit(hook, human)


@webhooks.command("list")
@client_command
def webhooks_list(conn: Conn) -> None:
    """The project's endpoints."""
    with conn.client() as client:
        hooks = client.webhooks.list()
    conn.emit(hooks, lambda: _webhook_rows(hooks))


@webhooks.command("delete")
@click.argument("webhook_id")
@client_command
def webhooks_delete(conn: Conn, webhook_id: str) -> None:
    """Delete an endpoint (its pending deliveries are dropped)."""
    with conn.client() as client:
        result = client.webhooks.delete(webhook_id)
    conn.emit(result, lambda: click.echo(f"deleted {webhook_id}"))


@webhooks.command("deliveries")
@click.argument("webhook_id")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@client_command
def webhooks_deliveries(conn: Conn, webhook_id: str, limit: int) -> None:
    """An endpoint's deliveries, newest first, with their last attempt."""
    with conn.client() as client:
        deliveries = client.webhooks.deliveries(webhook_id, limit)

    def human() -> None:
        rows = []
        for d in deliveries:
            last = (d.get("attempt_log") or [{}])[-1]
            outcome = last.get("status_code") or last.get("error") or ""
            rows.append([d["event_id"], d["event_type"], d["batch_id"], d["status"], d["attempts"], outcome])
        _table(["event", "type", "batch", "status", "attempts", "last answer"], rows)

    conn.emit(deliveries, human)
