"""GET /metrics: Prometheus text exposition (prometheus-client).

Who may read it: an `admin` key (the numbers span every project), sent as
`Authorization: Bearer <key>` (Prometheus: `authorization: {credentials: <key>}` in the
scrape config); nobody needs a key when the server runs with `BATCHGATE_METRICS_PUBLIC=true`
(a scraper on a private network) or with --insecure-no-auth.

Where the numbers come from: the store, read at scrape time, wherever they live there,
so every API process of a deployment reports the same, whole truth: the ledger (every
request, synchronous or batch, metered once, whichever process or worker ran it) and the
batches. Counters kept in each process would only count what that process did (batch lines
run in the workers, often other processes), and would restart at 0 with it. Scrape one
API process, or aggregate over instances with `max`, not `sum`. The one exception is
`batchgate_limiter_rejections_total`: a refused request leaves no row, so each process
counts its own refusals (sum over instances).

Metric names (`model`: as asked for; `kind`: sync or batch; `status`: HTTP status, "none"
for a line that ended without an answer):

    batchgate_requests_total{model,backend,kind,status}           counter
    batchgate_tokens_total{model,backend,kind,direction}          counter (direction: input|output)
    batchgate_cost_usd_total{model,backend,kind}                  counter (batch discount applied)
    batchgate_request_duration_seconds{model,backend,kind}        histogram
    batchgate_batches{status}                                     gauge
    batchgate_batches_budget_paused                               gauge
    batchgate_queue_lines                                         gauge (lines of running batches not done)
    batchgate_running_lines                                       gauge
    batchgate_limiter_rejections_total{reason}                    counter (this process)
    batchgate_key_budget_usd{key_id,period}                       gauge (keys with a budget)
    batchgate_key_budget_soft_usd{key_id,period}                  gauge
    batchgate_key_budget_spent_usd{key_id,period}                 gauge (this period)
    batchgate_key_budget_soft_reached{key_id,period}              gauge (1 or 0)
    batchgate_key_budget_exhausted{key_id,period}                 gauge (1 or 0)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from batchgate.api.deps import credentials, services
from batchgate.api.openapi import error_responses
from batchgate.app import Services, announces_work
from batchgate.core.budgets import Budgets, has_budget
from batchgate.core.states import BatchStatus
from batchgate.core.telemetry import LATENCY_BUCKETS_MS, REJECTIONS, LedgerCounters

router = APIRouter(tags=["metrics"])


class StoreCollector(Collector):
    """Every metric of /metrics, read from the store (and this process's refusals) when
    scraped."""

    def __init__(self, svc: Services, budgets: Budgets):
        self.svc = svc
        self.budgets = budgets
        # PostgreSQL commits concurrent transactions out of id order (see LedgerCounters)
        self.ledger = LedgerCounters(svc.store, 60.0 if announces_work(svc.store) else 0.0)

    def collect(self) -> Iterator[Metric]:
        yield from self._ledger()
        yield from self._batches()
        rejections = CounterMetricFamily(
            "batchgate_limiter_rejections",
            "Requests refused by a rate limit or budget (this process).",
            labels=["reason"],
        )
        for reason, count in sorted(REJECTIONS.counts().items()):
            rejections.add_metric([reason], count)
        yield rejections
        yield from self._budgets()

    def _ledger(self) -> Iterator[Metric]:
        labels = ["model", "backend", "kind"]
        requests = CounterMetricFamily(
            "batchgate_requests", "Requests metered in the ledger.", labels=[*labels, "status"]
        )
        tokens = CounterMetricFamily("batchgate_tokens", "Tokens metered.", labels=[*labels, "direction"])
        cost = CounterMetricFamily("batchgate_cost_usd", "Cost metered (batch discount applied), USD.", labels=labels)
        latency = HistogramMetricFamily(
            "batchgate_request_duration_seconds", "Request latency (a batch line: its run).", labels=labels
        )
        merged: dict[tuple[str, str, str], list] = {}  # the statuses of a (model, backend, kind) together
        for t in sorted(self.ledger.read(), key=lambda t: t.labels):
            key = (t.model, t.backend, t.kind)
            requests.add_metric([*key, t.status], t.requests)
            sums = merged.setdefault(key, [0, 0, 0.0, 0, [0] * len(LATENCY_BUCKETS_MS), 0])
            sums[0] += t.input_tokens
            sums[1] += t.output_tokens
            sums[2] += t.cost
            sums[3] += t.latency_ms
            sums[4] = [a + b for a, b in zip(sums[4], t.buckets, strict=True)]
            sums[5] += t.requests
        for key, (tokens_in, tokens_out, usd, latency_ms, buckets, count) in merged.items():
            tokens.add_metric([*key, "input"], tokens_in)
            tokens.add_metric([*key, "output"], tokens_out)
            cost.add_metric(list(key), usd)
            bounds = [(f"{ms / 1000:g}", n) for ms, n in zip(LATENCY_BUCKETS_MS, buckets, strict=True)]
            latency.add_metric(list(key), [*bounds, ("+Inf", count)], latency_ms / 1000)
        yield from (requests, tokens, cost, latency)

    def _batches(self) -> Iterator[Metric]:
        gauges = self.svc.store.batch_gauges()
        batches = GaugeMetricFamily("batchgate_batches", "Batches by status.", labels=["status"])
        for status in BatchStatus:
            batches.add_metric([status.value], gauges.by_status.get(status.value, 0))
        yield batches
        yield GaugeMetricFamily(
            "batchgate_batches_budget_paused", "Running batches paused: their key spent its budget.",
            value=gauges.budget_paused,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "batchgate_queue_lines", "Lines of running batches not done yet (waiting or running).",
            value=gauges.pending_lines,
        )  # fmt: skip
        yield GaugeMetricFamily("batchgate_running_lines", "Batch lines running now.", value=gauges.running_lines)

    def _budgets(self) -> Iterator[Metric]:
        labels = ["key_id", "period"]
        budget = GaugeMetricFamily("batchgate_key_budget_usd", "A key's hard budget per period, USD.", labels=labels)
        soft = GaugeMetricFamily("batchgate_key_budget_soft_usd", "A key's soft budget, USD.", labels=labels)
        spent = GaugeMetricFamily("batchgate_key_budget_spent_usd", "A key's spend this period, USD.", labels=labels)
        soft_reached = GaugeMetricFamily(
            "batchgate_key_budget_soft_reached", "1 if the key passed its soft budget this period.", labels=labels
        )
        exhausted = GaugeMetricFamily(
            "batchgate_key_budget_exhausted", "1 if the key spent its budget: its spending stops.", labels=labels
        )
        for key in self.svc.store.list_api_keys():
            if key.revoked_at is not None or not has_budget(key):
                continue
            s = self.budgets.status(key)
            values = [key.id, s.period]
            if s.budget_usd is not None:
                budget.add_metric(values, s.budget_usd)
            if s.soft_usd is not None:
                soft.add_metric(values, s.soft_usd)
            spent.add_metric(values, s.spent_usd)
            soft_reached.add_metric(values, int(s.soft_reached))
            exhausted.add_metric(values, int(s.exhausted))
        yield from (budget, soft, spent, soft_reached, exhausted)


def _registry(request: Request) -> CollectorRegistry:
    """The app's registry (one per app, so several apps in one process do not mix)."""
    state = request.app.state
    if getattr(state, "metrics_registry", None) is None:
        svc = services(request)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(svc, svc.budgets))
        state.metrics_registry = registry
    return state.metrics_registry


def _authorize(request: Request, svc: Annotated[Services, Depends(services)]) -> None:
    """An admin key, unless the metrics are public or the server runs without auth."""
    if svc.settings.insecure_no_auth or svc.settings.metrics_public:
        return
    key = svc.keys.authenticate(credentials(request.headers))
    svc.keys.authorize(key, "admin")


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(_authorize)],
    summary="Prometheus metrics (admin key, or BATCHGATE_METRICS_PUBLIC=true)",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "Text exposition."},
        **error_responses(401, 403, 500),
    },
)
def metrics(request: Request) -> Response:
    """Every metric, read from the store now (see the module's docstring for names)."""
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)
