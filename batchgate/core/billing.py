"""Billing export: usage from the ledger, as Stripe billing meter events.

What is sent. For each configured project, meter and hour (UTC, by the ledger's
`started_at`, the buckets of `GET /v1/usage?bucket=hour`), once the hour is closed
(`settle_seconds` after it ends), one meter event whose value is the hour's sum:

- meter `cost`: the ledger's cost (USD, batch lines already at their discounted price),
  in whole **micro-dollars** (1 USD = 1,000,000), rounded to the nearest;
- meter `tokens`: input + output tokens.

Stable identifiers. An event's identifier is `bg-{project_id}-{meter}-{hour}-{seq}`; it
is written to the outbox (store table `billing_events`) before anything is sent and is
sent both as the event's `identifier` and as the request's `Idempotency-Key`. A retry, a
crash between sending and recording, or two exporters computing the same hour can
therefore never bill twice: the outbox keeps one row per (project, meter, hour, seq),
and Stripe dedupes a resent identifier.

Late usage. The exporter recomputes the closed hours of the last `lookback_hours` (every
`RECHECK_SECONDS`; the passes between look at the last two closed hours only) and
compares each with what the outbox already holds for it (sent, pending or failed).
Usage metered after an hour's event was computed (a long request that started in it and
finished later) becomes a correction event with the next `seq` and the difference as its
value, stamped with the hour's start like the first, so Stripe's sum over the billing
period is the ledger's. A total that went down (it cannot, short of rounding) sends
nothing. Hours older than the lookback are never reopened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchgate.core.ledger import LedgerQuery

if TYPE_CHECKING:  # ports imports this module's types
    from batchgate.core.ports import Store

log = logging.getLogger("batchgate.billing")

HOUR = 3600
COST, TOKENS = "cost", "tokens"
METERS = (COST, TOKENS)
MICRO_USD = 1_000_000
PENDING, SENT, FAILED = "pending", "sent", "failed"
DEFAULT_API_BASE = "https://api.stripe.com"
MAX_LOOKBACK_HOURS = 30 * 24  # Stripe takes events stamped up to 35 days back
# how often the whole lookback is summed again for late usage; the passes between sum
# the last RECENT_HOURS closed hours only (a pass a minute would otherwise scan two days
# of ledger every minute)
RECHECK_SECONDS = 900
RECENT_HOURS = 2


@dataclass(frozen=True, slots=True)
class ProjectBilling:
    """Who pays for a project's usage, and the meters it is reported on (an event name
    per meter; None: that meter is not reported)."""

    project: str  # the project's name
    customer_id: str
    cost_event: str | None
    tokens_event: str | None

    def event_names(self) -> dict[str, str]:
        names = {COST: self.cost_event, TOKENS: self.tokens_event}
        return {meter: name for meter, name in names.items() if name}


@dataclass(frozen=True, slots=True)
class BillingConfig:
    """The `[billing]` section of the routing config (batchgate.toml)."""

    api_key_env: str
    projects: Mapping[str, ProjectBilling] = field(default_factory=dict)  # by project name
    api_base: str = DEFAULT_API_BASE
    settle_seconds: int = 300  # an hour is exported this long after it ends
    lookback_hours: int = 48  # closed hours recomputed for late usage
    interval: float = 60.0  # seconds between the exporter's passes
    timeout: float = 30.0  # seconds per request to Stripe

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env)


@dataclass(slots=True)
class BillingEvent:
    """One meter event in the outbox: exactly what is sent, and where its sending stands."""

    identifier: str
    project_id: str
    meter: str  # COST or TOKENS
    bucket_start: int  # the hour, epoch seconds (UTC)
    seq: int  # 0: the hour's first event; 1..: corrections for late usage
    event_name: str
    customer_id: str
    value: int  # micro-USD or tokens; a correction's is the difference
    timestamp: int  # sent as the event's timestamp: the hour's start
    created_at: int
    status: str = PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    sent_at: int | None = None
    last_error: str | None = None

    def form(self) -> dict[str, Any]:
        """The parameters of `POST /v1/billing/meter_events`."""
        return {
            "event_name": self.event_name,
            "payload": {"stripe_customer_id": self.customer_id, "value": str(self.value)},
            "identifier": self.identifier,
            "timestamp": self.timestamp,
        }


@dataclass(slots=True)
class BillingAttempt:
    """One try at sending an event, and what came of it."""

    identifier: str
    at: float
    outcome: str  # SENT, "retry" or FAILED
    status_code: int | None = None  # None: no answer (connection error, timeout)
    error: str | None = None
    request_id: str | None = None  # Stripe's request-id header


@dataclass(slots=True)
class BillingTotal:
    """What the outbox holds for one project, meter and hour: its events' values summed."""

    project_id: str
    meter: str
    bucket_start: int
    value: int
    events: int


@dataclass(slots=True)
class BillingSummary:
    pending: int = 0
    sent: int = 0
    failed: int = 0
    next_attempt_at: float | None = None  # the earliest pending event's


def identifier(project_id: str, meter: str, bucket_start: int, seq: int) -> str:
    return f"bg-{project_id}-{meter}-{bucket_start}-{seq}"


def closed_window(now: float, config: BillingConfig, hours: int | None = None) -> tuple[int, int]:
    """[since, until): the hours that are closed and recomputed (the last `hours` of
    them; None: the whole lookback)."""
    until = (int(now) - config.settle_seconds) // HOUR * HOUR
    return until - min(hours or config.lookback_hours, config.lookback_hours) * HOUR, until


def hourly_values(store: Store, since: int, until: int) -> dict[tuple[str, int], dict[str, int]]:
    """Per (project_id, hour): each meter's value, from the ledger's sums (sync and batch)."""
    cost: dict[tuple[str, int], float] = {}
    tokens: dict[tuple[str, int], int] = {}
    for row in store.ledger_usage(LedgerQuery(since=since, until=until), ("project",), HOUR):
        key = (str(row.group[0]), row.bucket)
        cost[key] = cost.get(key, 0.0) + row.cost
        tokens[key] = tokens.get(key, 0) + row.input_tokens + row.output_tokens
    return {key: {COST: round(cost[key] * MICRO_USD), TOKENS: tokens[key]} for key in cost}


def compute_events(store: Store, config: BillingConfig, now: float, hours: int | None = None) -> list[BillingEvent]:
    """The events the closed hours call for beyond what the outbox already holds (first
    events and corrections), for the configured projects that exist; only the last
    `hours` closed hours (None: the whole lookback)."""
    by_name = {p.name: p.id for p in store.list_projects()}
    billed = {by_name[name]: pb for name, pb in config.projects.items() if name in by_name}
    if not billed:
        return []
    since, until = closed_window(now, config, hours)
    held = {(t.project_id, t.meter, t.bucket_start): t for t in store.billing_totals(since)}
    events = []
    for (project_id, hour), values in sorted(hourly_values(store, since, until).items()):
        project = billed.get(project_id)
        if project is None:
            continue
        for meter, event_name in project.event_names().items():
            total = held.get((project_id, meter, hour))
            delta = values[meter] - (total.value if total else 0)
            if delta < 0:
                log.warning("billing: %s %s at %d is %d below what was sent; not sent", project_id, meter, hour, -delta)
            if delta <= 0:
                continue
            seq = total.events if total else 0
            event = BillingEvent(
                identifier(project_id, meter, hour, seq), project_id, meter, hour, seq, event_name,
                project.customer_id, delta, hour, int(now), next_attempt_at=now,
            )  # fmt: skip
            events.append(event)
    return events


# ---- the [billing] section of batchgate.toml ----------------------------------------------

_KEYS: dict[str, type | tuple[type, ...]] = {
    "api_key_env": str,
    "api_base": str,
    "cost_event": str,
    "tokens_event": str,
    "settle_seconds": int,
    "lookback_hours": int,
    "interval": (int, float),
    "timeout": (int, float),
}
_PROJECT_KEYS = {"stripe_customer_id", "cost_event", "tokens_event"}


def parse_billing(section: Any, problems: list[str]) -> BillingConfig | None:
    """The `[billing]` section (None when absent); each problem found is appended,
    naming its table and key."""
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.append("[billing]: expected a table")
        return None
    before = len(problems)
    for key in section:
        if key not in {*_KEYS, "projects", "api_key"}:
            problems.append(f"[billing]: unknown key {key!r} (known: {', '.join(sorted({*_KEYS, 'projects'}))})")
    if "api_key" in section:
        problems.append("[billing] api_key: never put a key in the file; name its env var in 'api_key_env'")
    for key, kind in _KEYS.items():
        if key in section and (not isinstance(section[key], kind) or isinstance(section[key], bool)):
            problems.append(
                f"[billing] {key}: expected {'a string' if kind is str else 'a number'}, got {section[key]!r}"
            )
    if "api_key_env" not in section:
        problems.append(
            "[billing]: missing 'api_key_env' (the env var holding the Stripe secret key, e.g. \"STRIPE_API_KEY\")"
        )
    base = section.get("api_base", DEFAULT_API_BASE)
    if isinstance(base, str) and not base.startswith(("http://", "https://")):
        problems.append(f"[billing] api_base: must start with http:// or https://, got {base!r}")
    for key in ("settle_seconds", "interval", "timeout"):
        if isinstance(section.get(key), int | float) and section[key] < (0 if key == "settle_seconds" else 1e-9):
            problems.append(f"[billing] {key}: must be {'0 or more' if key == 'settle_seconds' else 'positive'}")
    lookback = section.get("lookback_hours")
    if isinstance(lookback, int) and not 1 <= lookback <= MAX_LOOKBACK_HOURS:
        problems.append(f"[billing] lookback_hours: expected 1 to {MAX_LOOKBACK_HOURS}, got {lookback}")
    projects = _parse_projects(section, problems)
    if len(problems) > before:
        return None
    settings = {k: v for k, v in section.items() if k in _KEYS and k not in ("cost_event", "tokens_event")}
    return BillingConfig(**{**settings, "api_base": str(base).rstrip("/"), "projects": projects})


def _parse_projects(section: dict[str, Any], problems: list[str]) -> dict[str, ProjectBilling]:
    tables = section.get("projects", {})
    if not isinstance(tables, dict):
        problems.append("[billing.projects]: expected a table of projects, by name")
        return {}
    projects = {}
    for name, table in tables.items():
        where = f"[billing.projects.{name}]"
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table, got {table!r}")
            continue
        for key in table:
            if key not in _PROJECT_KEYS:
                problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_PROJECT_KEYS))})")
        customer = table.get("stripe_customer_id")
        if not isinstance(customer, str) or not customer:
            problems.append(f"{where}: missing 'stripe_customer_id' (the Stripe customer, e.g. \"cus_...\")")
            continue
        names = {key: table.get(key, section.get(key)) for key in ("cost_event", "tokens_event")}
        if any(v is not None and (not isinstance(v, str) or not 0 < len(v) <= 100) for v in names.values()):
            problems.append(f"{where}: cost_event and tokens_event are meter event names (1 to 100 characters)")
        elif not any(names.values()):
            problems.append(f"{where}: no meter: set cost_event or tokens_event (here or in [billing])")
        else:
            projects[name] = ProjectBilling(name, customer, names["cost_event"], names["tokens_event"])
    return projects
