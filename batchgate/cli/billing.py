"""`batchgate billing export | events`: the Stripe export of usage (core/billing.py), run on
the data dir or database directly."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from batchgate.cli.main import _settings, config_option, console, data_dir_option, database_url_option


@click.group()
def billing() -> None:
    """Usage reported to Stripe as billing meter events (the [billing] section of batchgate.toml)."""


def _billing_config(config: Path | None) -> Any:
    from batchgate.core.routing import ConfigError, load_config

    try:
        billing_config = load_config(config).billing
    except ConfigError as exc:
        raise click.ClickException(f"invalid config {exc}") from None
    if billing_config is None:
        raise click.ClickException("the routing config has no [billing] section (pass --config or BATCHGATE_CONFIG)")
    return billing_config


@billing.command("export")
@click.option("--wait", default=60.0, show_default=True, help="Seconds to wait for retries (429, 5xx) to fall due.")
@click.option("--retry-failed", is_flag=True, help="Queue the failed events (4xx) again first.")
@data_dir_option
@database_url_option
@config_option
def export(
    wait: float, retry_failed: bool, data_dir: Path | None, database_url: str | None, config: Path | None
) -> None:
    """Compute the closed hours' events into the outbox and send the pending ones now.

    Safe to run beside the exporter of `serve` and `worker`, and again after a crash:
    every event has a stable identifier, sent as its Idempotency-Key."""
    from batchgate.app import open_store
    from batchgate.core.billing_export import BillingExporter
    from batchgate.engines.stripe_meter import StripeMeterEvents

    billing_config = _billing_config(config)
    key = billing_config.api_key
    if not key:
        raise click.ClickException(f"${billing_config.api_key_env} (the Stripe secret key) is not set")
    store = open_store(_settings(home=data_dir, database_url=database_url, config=config))
    exporter = BillingExporter(
        store, billing_config, StripeMeterEvents(key, billing_config.api_base, billing_config.timeout)
    )

    async def run() -> Any:
        try:
            if retry_failed:
                console.print(
                    f"{store.retry_failed_billing_events(exporter.clock.time())} failed event(s) queued again"
                )
            return await exporter.export(wait)
        finally:
            await exporter.aclose()

    try:
        report = asyncio.run(run())
        summary = store.billing_summary()
    finally:
        store.close()
    console.print(
        f"computed {report.computed}, sent {report.sent}, to retry {report.retried}, failed {report.failed}; "
        f"outbox: {summary.pending} pending, {summary.sent} sent, {summary.failed} failed"
    )
    if summary.failed:
        console.print("[yellow]failed events keep Stripe's error: `batchgate billing events --status failed`[/]")
    if summary.pending or summary.failed:
        raise SystemExit(1)


@billing.command("events")
@click.option("--status", type=click.Choice(["pending", "sent", "failed"]), help="Only events in this state.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--attempts", "with_attempts", is_flag=True, help="With each event's attempts (JSON only).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@data_dir_option
@database_url_option
def events(
    status: str | None, limit: int, with_attempts: bool, as_json: bool, data_dir: Path | None, database_url: str | None
) -> None:
    """The outbox's meter events, newest first: what was (or will be) sent, and how it went."""
    from batchgate.app import open_store

    store = open_store(_settings(home=data_dir, database_url=database_url))
    try:
        rows = store.list_billing_events(status, limit)
        attempts = {e.identifier: store.list_billing_attempts(e.identifier) for e in rows} if with_attempts else {}
    finally:
        store.close()
    if as_json:
        for e in rows:
            item = asdict(e)
            if with_attempts:
                item["attempts_log"] = [asdict(a) for a in attempts[e.identifier]]
            click.echo(json.dumps(item))
        return
    table = Table("identifier", "event", "customer", "hour (UTC)", "value", "status", "tries", "last error")
    for e in rows:
        hour = dt.datetime.fromtimestamp(e.bucket_start, dt.UTC).strftime("%Y-%m-%d %H:00")
        table.add_row(
            e.identifier, e.event_name, e.customer_id, hour, str(e.value), e.status, str(e.attempts), e.last_error or ""
        )
    Console().print(table)
