"""Billing export on the fakes: the [billing] config, meter events computed from the ledger
(closed hours only, corrections for late usage, each computed once), and the exporter's
handling of Stripe's answers (sent, retried with backoff and Retry-After, failed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from batchgate.core.billing import (
    COST,
    FAILED,
    PENDING,
    RECHECK_SECONDS,
    SENT,
    TOKENS,
    BillingConfig,
    BillingEvent,
    ProjectBilling,
    compute_events,
)
from batchgate.core.billing_export import BillingExporter, RetryPolicy, SendResult
from batchgate.core.ledger import BATCH, SYNC, LedgerEntry
from batchgate.core.routing import ConfigError, parse_config
from batchgate.testing import FakeClock, InMemoryStore

HOUR = 3600
H = 1_800_000_000 // HOUR * HOUR  # an hour's start
CONFIG = BillingConfig(
    "STRIPE_KEY", {"acme": ProjectBilling("acme", "cus_acme", "bg_cost", "bg_tokens")}, settle_seconds=300
)


def test_the_billing_section_of_the_routing_config() -> None:
    config = parse_config({
        "billing": {
            "api_key_env": "STRIPE_KEY", "api_base": "http://127.0.0.1:9/", "cost_event": "bg_cost",
            "lookback_hours": 24, "interval": 5,
            "projects": {"acme": {"stripe_customer_id": "cus_1"}, "zeta": {"stripe_customer_id": "cus_2",
                                                                           "cost_event": "z_cost",
                                                                           "tokens_event": "z_tokens"}},
        }
    }).billing  # fmt: skip
    assert config is not None
    assert (config.api_base, config.lookback_hours, config.interval, config.settle_seconds) == (
        "http://127.0.0.1:9",
        24,
        5,
        300,
    )
    assert config.projects["acme"] == ProjectBilling("acme", "cus_1", "bg_cost", None)
    assert config.projects["zeta"].event_names() == {COST: "z_cost", TOKENS: "z_tokens"}
    assert parse_config({}).billing is None


def test_every_problem_of_the_billing_section_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({
            "billing": {
                "api_key": "sk_live_x", "api_base": "stripe.com", "lookback_hours": 2000, "colour": "red",
                "projects": {"a": {"cost_event": "c"}, "b": {"stripe_customer_id": "cus_b"}, "c": "cus_c"},
            }
        })  # fmt: skip
    problems = "\n".join(exc.value.problems)
    for expected in (
        "[billing] api_key: never put a key in the file",
        "[billing]: missing 'api_key_env'",
        "[billing] api_base: must start with http",
        "[billing] lookback_hours: expected 1 to 720",
        "[billing]: unknown key 'colour'",
        "[billing.projects.a]: missing 'stripe_customer_id'",
        "[billing.projects.b]: no meter",
        "[billing.projects.c]: expected a table",
    ):
        assert expected in problems


def ledger_row(
    project_id: str, started_at: float, cost: float, tokens: tuple[int, int], kind: str = SYNC
) -> LedgerEntry:
    return LedgerEntry(kind, project_id, "/v1/chat/completions", started_at, started_at + 1,
                       input_tokens=tokens[0], output_tokens=tokens[1], cost=cost)  # fmt: skip


def a_store() -> tuple[InMemoryStore, str, str]:
    store = InMemoryStore()
    acme = store.ensure_project("acme", H).id
    other = store.ensure_project("other", H).id
    return store, acme, other


def test_closed_hours_become_one_event_per_meter_with_the_ledger_sums() -> None:
    store, acme, other = a_store()
    store.add_ledger_entry(ledger_row(acme, H + 10, 0.0012344, (100, 20)))
    store.add_ledger_entry(ledger_row(acme, H + 3599.9, 0.000321, (40, 2), kind=BATCH))  # discounted already
    store.add_ledger_entry(ledger_row(acme, H + HOUR + 5, 0.5, (1, 1)))  # the next hour: not closed
    store.add_ledger_entry(ledger_row(other, H + 10, 1.0, (1, 1)))  # no billing configured
    assert compute_events(store, CONFIG, H + HOUR + 299) == []  # not settled yet
    events = compute_events(store, CONFIG, H + HOUR + 300)
    assert [(e.meter, e.value, e.seq, e.timestamp, e.event_name, e.customer_id) for e in events] == [
        (COST, 1555, 0, H, "bg_cost", "cus_acme"),  # 0.0015554 USD in micro-dollars
        (TOKENS, 162, 0, H, "bg_tokens", "cus_acme"),
    ]
    assert events[0].identifier == f"bg-{acme}-cost-{H}-0"
    assert events[0].form() == {
        "event_name": "bg_cost",
        "payload": {"stripe_customer_id": "cus_acme", "value": "1555"},
        "identifier": f"bg-{acme}-cost-{H}-0",
        "timestamp": H,
    }
    assert store.add_billing_events(events) == 2
    assert compute_events(store, CONFIG, H + HOUR + 900) == []  # computed once


def test_late_usage_in_an_exported_hour_is_a_correction_for_the_difference() -> None:
    store, acme, _ = a_store()
    store.add_ledger_entry(ledger_row(acme, H + 10, 0.002, (10, 10)))
    store.add_billing_events(compute_events(store, CONFIG, H + 2 * HOUR))
    store.add_ledger_entry(ledger_row(acme, H + 20, 0.0005, (5, 0)))  # a long request, metered late
    corrections = compute_events(store, CONFIG, H + 2 * HOUR)
    assert [(e.meter, e.seq, e.value, e.timestamp) for e in corrections] == [(COST, 1, 500, H), (TOKENS, 1, 5, H)]
    assert corrections[0].identifier.endswith(f"-cost-{H}-1")
    store.add_billing_events(corrections)
    totals = {t.meter: (t.value, t.events) for t in store.billing_totals(H)}
    assert totals == {COST: (2500, 2), TOKENS: (25, 2)}
    # hours older than the lookback are not reopened
    store.add_ledger_entry(ledger_row(acme, H + 30, 1.0, (1, 0)))
    assert compute_events(store, CONFIG, H + (CONFIG.lookback_hours + 2) * HOUR) == []


class ScriptedSender:
    """Answers from a script (then 200s), keeping every event it was given."""

    def __init__(self, answers: list[SendResult]):
        self.answers = answers
        self.sent: list[BillingEvent] = []

    async def send(self, event: BillingEvent) -> SendResult:
        self.sent.append(event)
        return self.answers.pop(0) if self.answers else SendResult(200, request_id="req_ok")

    async def aclose(self) -> None:
        pass


def exporter_on(answers: list[SendResult]) -> tuple[BillingExporter, ScriptedSender, FakeClock, InMemoryStore]:
    store, acme, _ = a_store()
    store.add_ledger_entry(ledger_row(acme, H + 10, 0.25, (1000, 500)))
    clock = FakeClock(H + 2 * HOUR)
    sender = ScriptedSender(answers)
    return BillingExporter(store, CONFIG, sender, clock), sender, clock, store


def test_a_rate_limited_event_waits_for_retry_after_and_holds_the_queue() -> None:
    exporter, sender, clock, store = exporter_on([SendResult(429, "Too many requests", retry_after=30)])
    report = asyncio.run(exporter.export_once())
    assert (report.computed, report.sent, report.retried, len(sender.sent)) == (2, 0, 1, 1)  # the queue waits
    first = sender.sent[0].identifier
    waiting = {e.identifier: e for e in store.list_billing_events(PENDING, 10)}
    assert waiting[first].next_attempt_at >= clock.time() + 30 and waiting[first].attempts == 1
    assert asyncio.run(exporter.export_once()).sent == 0  # still held
    clock.advance(30 + RetryPolicy().base)
    assert asyncio.run(exporter.export_once()).sent == 2
    assert [a.outcome for a in store.list_billing_attempts(first)] == ["retry", SENT]
    assert [a.status_code for a in store.list_billing_attempts(first)] == [429, 200]


def test_5xx_and_no_answer_back_off_and_other_4xx_fail() -> None:
    answers = [SendResult(500, "boom"), SendResult(None, "connection refused"), SendResult(400, "No such customer")]
    exporter, _, _, store = exporter_on(answers)
    report = asyncio.run(exporter.export(wait=3600))  # the CLI's run: waits for the retries
    assert (report.sent, report.retried, report.failed) == (1, 2, 1)
    events = {e.meter: e for e in store.list_billing_events(None, 10)}
    failed = events[TOKENS] if events[TOKENS].status == FAILED else events[COST]
    assert (failed.status, failed.last_error) == (FAILED, "No such customer")
    assert {e.status for e in events.values()} == {SENT, FAILED}
    assert store.billing_summary().pending == 0


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(base=2, cap=600)
    delays = [policy.delay(1, None) for _ in range(200)]
    assert 1 <= min(delays) < max(delays) <= 2  # jittered
    assert all(8 <= policy.delay(4, None) <= 16 for _ in range(50))
    assert all(300 <= policy.delay(30, None) <= 600 for _ in range(50))
    assert policy.delay(1, 45) == 45
    assert policy.delay(1, 10**6) == policy.max_retry_after


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    from email.utils import formatdate

    from batchgate.engines.stripe_meter import _retry_after

    assert _retry_after({"Retry-After": "7"}) == 7.0
    assert _retry_after({"retry-after": "0.5"}) == 0.5
    in_a_minute = _retry_after({"Retry-After": formatdate(time.time() + 60, usegmt=True)})
    assert in_a_minute is not None and 55 <= in_a_minute <= 60
    assert _retry_after({"Retry-After": "soon"}) is None
    assert _retry_after({}) is None


def test_the_exporter_rechecks_the_whole_lookback_every_15_minutes() -> None:
    exporter, _, clock, store = exporter_on([])
    acme = store.ensure_project("acme", H).id
    clock.advance(5 * HOUR)
    assert exporter.compute() == 2  # the first pass sums the whole lookback
    store.add_ledger_entry(ledger_row(acme, H + 20, 0.001, (3, 0)))  # late, 6 hours back
    store.add_ledger_entry(ledger_row(acme, clock.time() - 2 * HOUR, 0.002, (1, 1)))  # a closed hour, recent
    assert [e.value for e in compute_events(store, CONFIG, clock.time(), hours=2)] == [2000, 2]
    assert exporter.compute() == 2  # the recent hours only
    clock.advance(RECHECK_SECONDS)
    assert exporter.compute() == 2  # the late usage's corrections (cost, tokens)
    assert {(t.meter, t.events) for t in store.billing_totals(H) if t.bucket_start == H} == {(COST, 2), (TOKENS, 2)}
