"""Billing export against a fake Stripe over real HTTP: the official `stripe` library's
requests are checked field by field (form encoding, `Authorization: Bearer`, the
Idempotency-Key), 429s and 500s are injected, a crash between sending and recording is
simulated, and the values Stripe receives are compared with the ledger's sums."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pgdb import new_database

from batchgate.core.billing import COST, FAILED, HOUR, MICRO_USD, SENT, TOKENS, BillingConfig, ProjectBilling
from batchgate.core.billing_export import BillingExporter, SendResult
from batchgate.core.ledger import BATCH, SYNC, LedgerEntry, LedgerQuery
from batchgate.core.ports import Store
from batchgate.engines.stripe_meter import StripeMeterEvents
from batchgate.store import SQLiteStore
from batchgate.store.postgres import PostgresStore
from batchgate.testing import FakeClock

# the stripe library posts its form through httpx's `data=` (a str), which httpx deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
SECRET = "sk_test_batchgate_123"
FIELDS = {"event_name", "payload[stripe_customer_id]", "payload[value]", "identifier", "timestamp"}


@dataclass
class FakeStripe:
    """`POST /v1/billing/meter_events` as Stripe answers it, strict about the request:
    a problem with one is answered 400 and kept in `problems`. Keeps each event once per
    identifier; a repeated Idempotency-Key gets the first answer again."""

    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # answers to give first
    drop_after_accept: int = 0  # accept this many events, then close the connection unanswered
    hold: threading.Event | None = None  # set: accept the next event, then answer only once it is set
    held: threading.Event = field(default_factory=threading.Event)  # an event is in, its answer held
    events: dict[str, dict[str, str]] = field(default_factory=dict)  # by identifier
    replies: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # by Idempotency-Key
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True).items()}
        key = headers.get("Idempotency-Key")
        with self.lock:
            self.requests.append({"path": path, "form": form, "key": key})
            problems = self.check(path, headers, form)
            if problems:
                self.problems += problems
                return 400, {}, _error("invalid_request_error", "; ".join(problems))
            if self.faults:
                status, extra = self.faults.pop(0)
                return status, extra, _error("rate_limit_error" if status == 429 else "api_error", f"injected {status}")
            if key in self.replies:
                status, reply = self.replies[key]
                return status, {"Idempotent-Replayed": "true"}, reply
            identifier = form["identifier"]
            if identifier in self.events:
                self.duplicates += 1
                reply = _error("invalid_request_error", f"An event with identifier {identifier} already exists.")
                self.replies[key] = (400, reply)
                return 400, {}, reply
            self.events[identifier] = form
            reply = json.dumps({
                "object": "billing.meter_event", "created": int(time.time()), "event_name": form["event_name"],
                "identifier": identifier, "livemode": False, "timestamp": int(form["timestamp"]),
                "payload": {"stripe_customer_id": form["payload[stripe_customer_id]"], "value": form["payload[value]"]},
            }).encode()  # fmt: skip
            self.replies[key] = (200, reply)
            hold, self.hold = self.hold, None
            if self.drop_after_accept:
                self.drop_after_accept -= 1
                return None  # the event is in; the answer never arrives
        if hold is not None:
            self.held.set()
            hold.wait(60)
        return 200, {}, reply

    @staticmethod
    def check(path: str, headers: Any, form: dict[str, str]) -> list[str]:
        problems = []
        if path != "/v1/billing/meter_events":
            problems.append(f"path {path}")
        if headers.get("Authorization") != f"Bearer {SECRET}":
            problems.append(f"Authorization {headers.get('Authorization')!r}")
        if headers.get("Content-Type") != "application/x-www-form-urlencoded":
            problems.append(f"Content-Type {headers.get('Content-Type')!r}")
        if set(form) != FIELDS:
            problems.append(f"fields {sorted(form)}")
            return problems
        if headers.get("Idempotency-Key") != form["identifier"]:
            problems.append(f"Idempotency-Key {headers.get('Idempotency-Key')!r} is not the identifier")
        if not form["payload[value]"].isdigit() or not form["timestamp"].isdigit():
            problems.append(f"value {form['payload[value]']!r} / timestamp {form['timestamp']!r} not whole numbers")
        return problems

    def values(self) -> dict[tuple[str, str, int], int]:
        """Per (customer, event name, timestamp): the sum of the events' values."""
        sums: dict[tuple[str, str, int], int] = {}
        for form in self.events.values():
            key = (form["payload[stripe_customer_id]"], form["event_name"], int(form["timestamp"]))
            sums[key] = sums.get(key, 0) + int(form["payload[value]"])
        return sums


def _error(kind: str, message: str) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message}}).encode()


@pytest.fixture
def stripe_server() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = fake.handle(self.path, self.headers, body)
            if answer is None:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            status, extra, reply = answer
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", "Request-Id": "req_fake", **extra}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Opens stores on one database, SQLite or PostgreSQL (each test runs on both);
    all closed at teardown."""
    url = new_database() if request.param == "postgres" else None
    stores: list[Store] = []

    def opened() -> Store:
        store: Store = PostgresStore(url, pool_size=4, migrate=False) if url else SQLiteStore(tmp_path / "b.db")
        stores.append(store)
        return store

    yield opened
    for store in stores:
        store.close()


H = 1_800_000_000 // HOUR * HOUR


def config_for(api_base: str, **settings: Any) -> BillingConfig:
    projects = {
        "acme": ProjectBilling("acme", "cus_acme", "bg_cost", "bg_tokens"),
        "zeta": ProjectBilling("zeta", "cus_zeta", "bg_cost", None),
    }
    return BillingConfig("STRIPE_KEY", projects, api_base, **settings)


def seed_ledger(store: Store, start: float, hours: int = 3) -> dict[str, str]:
    """Sync and batch rows for acme and zeta (and an unbilled project) over `hours` hours."""
    ids = {name: store.ensure_project(name, int(start)).id for name in ("acme", "zeta", "free")}
    n = 0
    for hour in range(hours):
        for project in ids.values():
            for i in range(7):
                n += 1
                kind = BATCH if i % 2 else SYNC
                at = start + hour * HOUR + i * 500 + 0.25
                cost = 0.0000137 * n * (0.5 if kind == BATCH else 1)  # batch lines: discounted already
                entry = LedgerEntry(
                    kind, project, "/v1/chat/completions", at, at + 2, batch_id=f"batch_{n}" if kind == BATCH else None,
                    line=1 if kind == BATCH else None, input_tokens=10 * n, output_tokens=n, cost=cost,
                )  # fmt: skip
                store.add_ledger_entry(entry)
    return ids


def ledger_sums(store: Store, project_id: str, until: int) -> dict[int, tuple[int, int]]:
    """Per hour: (micro-USD, tokens), summed in Python from the ledger's rows."""
    sums: dict[int, list[float]] = {}
    for e in store.list_ledger(LedgerQuery(project_id=project_id, until=until, limit=10_000)).data:
        row = sums.setdefault(int(e.started_at) // HOUR * HOUR, [0.0, 0])
        row[0] += e.cost
        row[1] += e.input_tokens + e.output_tokens
    return {hour: (round(cost * MICRO_USD), int(tokens)) for hour, (cost, tokens) in sums.items()}


def exporter(store: Store, api_base: str, clock: FakeClock) -> BillingExporter:
    config = config_for(api_base)
    return BillingExporter(store, config, StripeMeterEvents(SECRET, api_base, timeout=5), clock)


async def export(e: BillingExporter, wait: float = 0.0) -> Any:
    try:
        return await e.export(wait)
    finally:
        await e.aclose()


def test_meter_events_reach_stripe_once_with_the_ledger_sums(stripe_server: Any, open_store: Any) -> None:
    fake, api_base = stripe_server
    store = open_store()
    ids = seed_ledger(store, H, hours=3)
    clock = FakeClock(H + 3 * HOUR + 301)  # three closed hours
    report = asyncio.run(export(exporter(store, api_base, clock)))
    assert fake.problems == []
    assert (report.computed, report.sent, report.retried, report.failed) == (9, 9, 0, 0)  # acme 2 meters, zeta 1
    expected = {}
    for hour, (micro, tokens) in ledger_sums(store, ids["acme"], H + 3 * HOUR).items():
        expected[("cus_acme", "bg_cost", hour)] = micro
        expected[("cus_acme", "bg_tokens", hour)] = tokens
    for hour, (micro, _) in ledger_sums(store, ids["zeta"], H + 3 * HOUR).items():
        expected[("cus_zeta", "bg_cost", hour)] = micro
    assert fake.values() == expected
    assert all(v > 0 for v in expected.values())
    first = fake.events[f"bg-{ids['acme']}-cost-{H}-0"]  # identifier: project, meter, hour, seq
    assert (first["timestamp"], first["event_name"], first["payload[stripe_customer_id]"]) == (
        str(H),
        "bg_cost",
        "cus_acme",
    )
    # again, later: nothing new is computed or sent
    clock.advance(600)
    again = asyncio.run(export(exporter(store, api_base, clock)))
    assert (again.computed, again.sent, len(fake.requests)) == (0, 0, 9)
    assert {e.status for e in store.list_billing_events(None, 100)} == {SENT}
    # late usage in an exported hour: one correction per meter, for the difference
    late = LedgerEntry(SYNC, ids["acme"], "/v1/embeddings", H + 100, H + 4 * HOUR, input_tokens=50, cost=0.000042)
    store.add_ledger_entry(late)
    corrections = asyncio.run(export(exporter(store, api_base, clock)))
    assert (corrections.computed, corrections.sent) == (2, 2)
    assert fake.events[f"bg-{ids['acme']}-cost-{H}-1"]["payload[value]"] == "42"
    assert fake.events[f"bg-{ids['acme']}-tokens-{H}-1"]["payload[value]"] == "50"
    hour0 = ledger_sums(store, ids["acme"], H + HOUR)[H]
    values = fake.values()
    assert (values[("cus_acme", "bg_cost", H)], values[("cus_acme", "bg_tokens", H)]) == hour0
    assert fake.duplicates == 0 and fake.problems == []


def test_429_and_500_are_retried_with_backoff_and_retry_after(stripe_server: Any, open_store: Any) -> None:
    fake, api_base = stripe_server
    fake.faults = [(429, {"Retry-After": "7"}), (500, {}), (503, {})]
    store = open_store()
    seed_ledger(store, H, hours=1)
    clock = FakeClock(H + HOUR + 301)
    e = exporter(store, api_base, clock)

    async def passes() -> Any:
        first = await e.export_once()
        assert (first.sent, first.retried, len(fake.requests)) == (0, 1, 1)  # the queue waits after a 429
        waiting = store.list_billing_attempts(fake.requests[0]["form"]["identifier"])
        assert [(a.outcome, a.status_code, a.request_id) for a in waiting] == [("retry", 429, "req_fake")]
        assert e.hold_until >= clock.time() + 7
        assert (await e.export_once()).sent == 0 and len(fake.requests) == 1  # Retry-After holds
        return await export(e, wait=3600)  # the fake clock sleeps through the backoffs

    report = asyncio.run(passes())
    assert (report.sent, report.retried, report.failed) == (3, 2, 0)
    assert fake.problems == [] and fake.duplicates == 0
    assert len(fake.events) == 3 and len(fake.requests) == 6
    attempts = [a for ev in store.list_billing_events(None, 10) for a in store.list_billing_attempts(ev.identifier)]
    assert sorted(a.status_code for a in attempts) == [200, 200, 200, 429, 500, 503]
    # the same identifier was sent again after each failure, with the same Idempotency-Key
    retried = fake.requests[0]["form"]["identifier"]
    assert [r["key"] for r in fake.requests].count(retried) >= 2


def test_other_4xx_fail_the_event_with_stripes_error(stripe_server: Any, open_store: Any) -> None:
    fake, api_base = stripe_server
    store = open_store()
    seed_ledger(store, H, hours=1)
    clock = FakeClock(H + HOUR + 301)
    bad_key = BillingExporter(store, config_for(api_base), StripeMeterEvents("sk_test_wrong", api_base), clock)
    report = asyncio.run(export(bad_key))
    assert (report.sent, report.failed) == (0, 3)
    failed = store.list_billing_events(FAILED, 10)
    assert len(failed) == 3 and all("Authorization" in (e.last_error or "") for e in failed)
    assert all(e.attempts == 1 for e in failed)
    fake.problems.clear()
    assert store.retry_failed_billing_events(clock.time()) == 3
    assert asyncio.run(export(exporter(store, api_base, clock))).sent == 3
    assert fake.problems == [] and len(fake.events) == 3


class CrashAfterSend:
    """Sends, then dies before the outcome can be recorded (as a kill -9 would)."""

    def __init__(self, sender: StripeMeterEvents):
        self.sender = sender

    async def send(self, event: Any) -> SendResult:
        await self.sender.send(event)
        raise SystemExit("killed between send and record")

    async def aclose(self) -> None:
        await self.sender.aclose()


def test_a_crash_between_send_and_record_never_bills_twice(stripe_server: Any, open_store: Any) -> None:
    fake, api_base = stripe_server
    store = open_store()
    seed_ledger(store, H, hours=1)
    clock = FakeClock(H + HOUR + 301)
    doomed = BillingExporter(store, config_for(api_base), CrashAfterSend(StripeMeterEvents(SECRET, api_base)), clock)
    with pytest.raises(SystemExit):
        asyncio.run(export(doomed))
    assert len(fake.events) == 1  # Stripe has it; the outbox does not know
    sent_first = next(iter(fake.events))
    # a new process, at once: the event is still leased to the dead one, the others go out
    report = asyncio.run(export(exporter(store, api_base, clock)))
    assert report.sent == 2 and len(fake.events) == 3
    # once the lease runs out it is sent again, same identifier and key: Stripe counts it once
    clock.advance(60)
    report = asyncio.run(export(exporter(store, api_base, clock)))
    assert report.sent == 1 and len(fake.events) == 3 and fake.duplicates == 0
    assert [r["key"] for r in fake.requests].count(sent_first) == 2
    assert {e.status for e in store.list_billing_events(None, 10)} == {SENT}
    # an answer lost on the way back (the event is in): retried, replayed, counted once
    fake.drop_after_accept = 1
    late = LedgerEntry(SYNC, store.ensure_project("zeta", H).id, "/v1/chat/completions", H + 5, H + 6, cost=0.001)
    store.add_ledger_entry(late)
    report = asyncio.run(export(exporter(store, api_base, clock), wait=3600))
    assert (report.computed, report.retried, report.sent) == (1, 1, 1)
    assert len(fake.events) == 4 and fake.duplicates == 0 and fake.problems == []


def test_two_exporters_at_once_send_each_event_once(stripe_server: Any, open_store: Any) -> None:
    """Two processes' exporters (two stores on one database) computing and sending
    together: each event is computed once and sent once."""
    fake, api_base = stripe_server
    first, second = open_store(), open_store()
    seed_ledger(first, H, hours=4)
    clock = FakeClock(H + 4 * HOUR + 301)

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(export(exporter(first, api_base, clock)), export(exporter(second, api_base, clock)))
        )

    reports = asyncio.run(both())
    assert sum(r.computed for r in reports) == 12 and sum(r.sent for r in reports) == 12
    assert len(fake.events) == 12 and len(fake.requests) == 12 and fake.duplicates == 0


def test_billing_export_command(stripe_server: Any, tmp_path: Path) -> None:
    """`batchgate billing export` on a data dir: sends the closed hours, then nothing more;
    `batchgate billing events` lists them."""
    fake, api_base = stripe_server
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteStore(data / "batchgate.db")
    now = time.time()
    ids = seed_ledger(store, (now // HOUR - 3) * HOUR, hours=2)
    store.close()
    config = tmp_path / "batchgate.toml"
    config.write_text(
        f'[billing]\napi_key_env = "BG_TEST_STRIPE"\napi_base = "{api_base}"\ncost_event = "bg_cost"\n'
        '[billing.projects.acme]\nstripe_customer_id = "cus_acme"\ntokens_event = "bg_tokens"\n'
    )
    env = {**os.environ, "BG_TEST_STRIPE": SECRET, "BATCHGATE_HOME": str(data), "BATCHGATE_CONFIG": str(config)}
    command = [sys.executable, "-m", "batchgate", "billing"]
    first = subprocess.run([*command, "export"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "computed 4, sent 4" in first.stderr
    assert fake.problems == [] and len(fake.events) == 4
    second = subprocess.run([*command, "export"], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "computed 0, sent 0" in second.stderr
    listed = subprocess.run([*command, "events", "--json", "--attempts"], env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 4 and {r["status"] for r in rows} == {SENT}
    assert all(r["project_id"] == ids["acme"] and len(r["attempts_log"]) == 1 for r in rows)
    assert {r["meter"] for r in rows} == {COST, TOKENS}
    no_key = {k: v for k, v in env.items() if k != "BG_TEST_STRIPE"}
    refused = subprocess.run([*command, "export"], env=no_key, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "$BG_TEST_STRIPE" in refused.stderr
    check = subprocess.run(
        [sys.executable, "-m", "batchgate", "config", "check", str(config)], env=env, capture_output=True, text=True
    )
    assert check.returncode == 0 and f"billing export to {api_base}" in check.stderr
    assert "$BG_TEST_STRIPE set" in check.stderr and "cus_acme" in check.stdout


def test_kill_9_between_send_and_record_never_bills_twice(stripe_server: Any, tmp_path: Path) -> None:
    """`batchgate billing export` killed (-9) after Stripe took an event and before the
    answer came back: the next run sends the others at once, and the killed one again
    when its claim lapses, with the same identifier; Stripe keeps each event once."""
    fake, api_base = stripe_server
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteStore(data / "batchgate.db")
    seed_ledger(store, (time.time() // HOUR - 3) * HOUR, hours=2)
    config = tmp_path / "batchgate.toml"
    config.write_text(
        f'[billing]\napi_key_env = "BG_TEST_STRIPE"\napi_base = "{api_base}"\ncost_event = "bg_cost"\n'
        'timeout = 2\n[billing.projects.acme]\nstripe_customer_id = "cus_acme"\n'
        '[billing.projects.zeta]\nstripe_customer_id = "cus_zeta"\n'
    )
    env = {**os.environ, "BG_TEST_STRIPE": SECRET, "BATCHGATE_HOME": str(data), "BATCHGATE_CONFIG": str(config)}
    release = threading.Event()
    fake.hold = release
    doomed = subprocess.Popen(
        [sys.executable, "-m", "batchgate", "billing", "export"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        assert fake.held.wait(60), "the export never reached Stripe"
        doomed.kill()  # SIGKILL: the answer is never read, nothing is recorded
        doomed.wait(10)
    finally:
        release.set()
    killed = fake.requests[0]["form"]["identifier"]
    assert list(fake.events) == [killed]
    outbox = {e.identifier: e for e in store.list_billing_events(None, 10)}
    assert len(outbox) == 4 and outbox[killed].attempts == 0 and outbox[killed].status == "pending"
    rerun = subprocess.run(
        [sys.executable, "-m", "batchgate", "billing", "export", "--wait", "60"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "computed 0, sent 4" in rerun.stderr
    assert [r["form"]["identifier"] for r in fake.requests].count(killed) == 2
    assert [r["key"] for r in fake.requests].count(killed) == 2  # the same Idempotency-Key
    assert len(fake.events) == 4 and fake.duplicates == 0 and fake.problems == []
    assert {e.status for e in store.list_billing_events(None, 10)} == {"sent"}
    store.close()


def test_the_server_runs_the_exporter(stripe_server: Any, tmp_path: Path, start_server: Any) -> None:
    """`batchgate serve` with a [billing] section exports the closed hours by itself, and
    leaves the current hour (its own synchronous call's) for later."""
    fake, api_base = stripe_server
    data = tmp_path / "data"
    data.mkdir()
    store = SQLiteStore(data / "batchgate.db")
    ids = seed_ledger(store, (time.time() // HOUR - 3) * HOUR, hours=2)
    config = tmp_path / "batchgate.toml"
    config.write_text(
        f'[billing]\napi_key_env = "BG_TEST_STRIPE"\napi_base = "{api_base}"\ninterval = 0.2\n'
        '[billing.projects.acme]\nstripe_customer_id = "cus_acme"\ncost_event = "bg_cost"\n'
    )
    server = start_server(env={"BG_TEST_STRIPE": SECRET, "BATCHGATE_CONFIG": str(config)}, data_dir=data)
    key = server.create_key("acme")
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hello"}]}
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    deadline = time.time() + 30
    while len(fake.events) < 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # and nothing more comes
    expected = {
        ("cus_acme", "bg_cost", hour): micro
        for hour, (micro, _) in ledger_sums(store, ids["acme"], int(time.time()) // HOUR * HOUR).items()
    }
    assert len(expected) == 2  # the seeded hours; the call's hour is still open
    assert fake.values() == expected and fake.problems == [] and fake.duplicates == 0
    store.close()
