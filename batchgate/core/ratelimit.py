"""Rate limits on API keys: rolling windows (GCRA), with their counters in the store.

A key's `RateLimit(kind, limit, window_s)` allows a burst of `limit` and refills at
`limit / window_s` per second: the generic cell rate algorithm, kept as "how much is in
use, as of when" (`level`, `updated_at`) per key and limit, which drains continuously.
A request costing `n` is admitted when `in_use + n <= limit` for every limit of its key
at once; otherwise it is told how long until it would be (`retry_after`). Unlike a fixed
window there is no reset instant at which twice the limit could pass.

Every check reads and writes the counters in one store transaction (`Store.rate_limit_step`),
so API processes and workers sharing a database share the limits exactly: no process
keeps counts of its own. Tokens are charged at admission as estimated (prompt tokens
and `max_tokens`) and settled with the real usage once known; a request that used more
than estimated leaves the key in debt, and later requests wait for it to drain.

`max_parallel_requests` counts leases in the store: one per running request, dropped when
it ends; a lease left by a crashed process stops counting when it expires (`LEASE_S`).
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchgate.core.models import LIMIT_KINDS, ApiKey, RateLimit
from batchgate.core.ports import LimiterWrite, Store

log = logging.getLogger("batchgate.ratelimit")

LEASE_S = 900.0  # a parallel-request lease outlives any request; a crashed holder's stops counting after it
_SLACK = 1e-9  # float rounding of the drain must not refuse a request exactly at the boundary

TOKEN_KINDS = ("input_tokens", "output_tokens", "total_tokens")


# ---- limits as text: the CLI's KIND=LIMIT/WINDOW --------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LIMIT_TEXT = re.compile(r"(?P<kind>\w+)=(?P<limit>\d+)/(?P<n>\d+)?(?P<unit>[smhd])?")


def parse_limit(text: str) -> RateLimit:
    """`requests=600/1m` (or `/60`, `/60s`, `/m`) as a RateLimit; ValueError saying why not."""
    match = _LIMIT_TEXT.fullmatch(text.strip())
    if match is None or (match["n"] is None and match["unit"] is None):
        raise ValueError(f"{text!r} is not KIND=LIMIT/WINDOW (e.g. requests=600/1m, total_tokens=100000/3600)")
    if match["kind"] not in LIMIT_KINDS:
        raise ValueError(f"unknown limit kind {match['kind']!r}; kinds are {', '.join(LIMIT_KINDS)}")
    window = int(match["n"] or 1) * _UNITS[match["unit"] or "s"]
    return RateLimit(match["kind"], int(match["limit"]), window)


def describe_limit(limit: RateLimit) -> str:
    """The limit as `parse_limit` reads it, its window in the largest whole unit."""
    return f"{limit.kind}={limit.limit}/{_window_text(limit.window_s)}"


def _window_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def reset_text(seconds: float) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it (Go's style): `20ms`,
    `1s`, `1.5s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{int(minutes)}m" + text
    if hours:
        text = f"{int(hours)}h" + text
    return text


# ---- what a request costs -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request counts against each kind of limit."""

    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0

    def of(self, kind: str) -> int:
        if kind == "total_tokens":
            return self.input_tokens + self.output_tokens
        return int(getattr(self, kind))


_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_NOT_TEXT = frozenset({"model", "tools", "response_format", "metadata", "user", "stream_options"})


class PromptTokens(Protocol):
    """(url, body, the key's routing profile) -> the prompt's tokens by the tokenizer of
    the model it will run on; None where that cannot be told."""

    def __call__(self, url: str, body: dict[str, Any], profile: str | None = None) -> int | None: ...


def estimate_cost(
    body: Any, url: str = "", prompt_tokens: PromptTokens | None = None, profile: str | None = None
) -> Cost:
    """A request body's cost before it runs: its prompt tokens counted by `prompt_tokens`
    (the model's tokenizer, for a local model) or else estimated from the length of its
    text (about 4 characters a token), and its output as its `max_tokens` (0 when it
    names none). Either way the real count is settled afterwards."""
    if not isinstance(body, dict):
        return Cost()
    output = next((v for f in _OUTPUT_FIELDS if isinstance(v := body.get(f), int) and v > 0), 0)
    counted = None
    if prompt_tokens is not None:
        try:
            counted = prompt_tokens(url, body, profile)
        except Exception:  # an estimate: a counter's failure must not fail the request
            log.exception("could not count the prompt tokens of a %s request; estimating", url)
    if counted is None:
        chars = sum(_text_length(v) for k, v in body.items() if k not in _NOT_TEXT and not k.startswith("max_"))
        counted = math.ceil(chars / 4)
    return Cost(1, counted, output)


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_length(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_length(v) for v in value)
    return 0


# ---- the algorithm ------------------------------------------------------------------

Levels = dict[tuple[str, int], tuple[float, float]]  # (kind, window_s) -> (level, updated_at)


def in_use(levels: Levels, limit: RateLimit, now: float) -> float:
    """How much of `limit` is in use at `now` (it drains at limit / window_s per second)."""
    level, updated_at = levels.get((limit.kind, limit.window_s), (0.0, now))
    return max(0.0, level - max(0.0, now - updated_at) * limit.limit / limit.window_s)


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit after a check: what the x-ratelimit headers tell."""

    limit: RateLimit
    remaining: int
    reset_s: float  # until nothing of it is in use


@dataclass(slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until the same request would be admitted (if ever)
    refused_by: RateLimit | None = None  # the limit that refused it (None: the parallel cap)
    never: bool = False  # the request alone is over a limit: waiting cannot help
    states: list[LimitState] = field(default_factory=list)
    lease: str | None = None  # the parallel-request lease to give back when it ends
    message: str = ""

    def header_states(self) -> tuple[LimitState | None, LimitState | None]:
        """The (requests, tokens) limits the headers describe: of each, the one with the
        least remaining."""

        def tightest(kinds: Iterable[str]) -> LimitState | None:
            states = [s for s in self.states if s.limit.kind in kinds]
            return min(states, key=lambda s: (s.remaining, -s.reset_s)) if states else None

        return tightest(("requests",)), tightest(TOKEN_KINDS)


def _state(limit: RateLimit, used: float) -> LimitState:
    return LimitState(limit, max(0, math.floor(limit.limit - used + _SLACK)), used * limit.window_s / limit.limit)


def check(limits: Iterable[RateLimit], levels: Levels, cost: Cost, now: float) -> tuple[Decision, Levels]:
    """Admit `cost` against every limit at once, or none: the decision and the levels to
    write (empty when refused)."""
    states: list[LimitState] = []
    written: Levels = {}
    refusal: Decision | None = None
    for limit in limits:
        used, amount = in_use(levels, limit, now), cost.of(limit.kind)
        if amount > limit.limit:
            message = f"The request alone needs {amount} {_unit(limit)}, more than the limit of {_per(limit)}."
            refusal = Decision(False, math.inf, limit, never=True, message=message)
        elif used + amount > limit.limit + _SLACK:
            wait = (used + amount - limit.limit) * limit.window_s / limit.limit
            if refusal is None or (not refusal.never and wait > refusal.retry_after):
                message = f"Rate limit reached for {_per(limit)} on this API key: {_unit(limit)} in use {used:.0f}, this request {amount}."
                refusal = Decision(False, wait, limit, message=message)
        else:
            used += amount
            written[(limit.kind, limit.window_s)] = (used, now)
        states.append(_state(limit, used))
    if refusal is not None:
        refusal.states = [_state(s.limit, in_use(levels, s.limit, now)) for s in states]
        return refusal, {}
    return Decision(True, states=states), written


def settle(limits: Iterable[RateLimit], levels: Levels, delta: Cost, now: float) -> Levels:
    """The levels after a request's real cost differed from its estimate by `delta` (what
    it used more; negative: less). A request that used more than it was charged leaves
    the limit in debt (above it) until that drains."""
    written: Levels = {}
    for limit in limits:
        if amount := delta.of(limit.kind):
            written[(limit.kind, limit.window_s)] = (max(0.0, in_use(levels, limit, now) + amount), now)
    return written


def _unit(limit: RateLimit) -> str:
    return "requests" if limit.kind == "requests" else limit.kind.replace("_", " ")


def _per(limit: RateLimit) -> str:
    return f"{limit.limit} {_unit(limit)} per {limit.window_s} s ({describe_limit(limit)})"


def is_limited(key: ApiKey | None) -> bool:
    return key is not None and (bool(key.limits) or key.max_parallel_requests is not None)


# ---- the limiter: the algorithm over the store --------------------------------------


class Limiter:
    """Checks and charges a key's limits in the store (call from a thread: every method
    is one store transaction)."""

    def __init__(self, store: Store):
        self.store = store

    def acquire(self, key: ApiKey, cost: Cost, now: float) -> Decision:
        """Admit a request of `key` costing `cost` at `now`, charging its limits and (with
        max_parallel_requests) taking a lease; or the refusal, charging nothing."""
        decision = self._acquire(key, cost, now, wait=True)
        assert decision is not None
        return decision

    def try_acquire(self, key: ApiKey, cost: Cost, now: float) -> Decision | None:
        """As `acquire`, if the store can take the step at once (on an event loop: no
        thread hop); None, charging nothing, if it cannot (`Store.rate_limit_step`)."""
        return self._acquire(key, cost, now, wait=False)

    def _acquire(self, key: ApiKey, cost: Cost, now: float, wait: bool) -> Decision | None:
        parallel = key.max_parallel_requests
        outcome: list[Decision] = []

        def step(levels: Levels, running: int) -> LimiterWrite:
            decision, written = check(key.limits, levels, cost, now)
            if decision.allowed and parallel is not None and running >= parallel:
                message = f"max_parallel_requests ({parallel}) of this API key are running."
                decision = Decision(False, 0.05, None, states=decision.states, message=message)
                written = {}
            outcome.append(decision)
            if not decision.allowed:
                return LimiterWrite()
            if parallel is not None:
                decision.lease = "lease_" + secrets.token_hex(8)
            lease = (decision.lease, now + LEASE_S) if decision.lease else None
            return LimiterWrite(written, add_lease=lease)

        if not self.store.rate_limit_step(key.id, now, parallel is not None, step, wait):
            return None
        return outcome[0]

    def states(self, key: ApiKey, now: float) -> list[LimitState]:
        """Each of the key's limits as it stands at `now` (read only: charges nothing)."""
        seen: list[Levels] = []

        def step(levels: Levels, running: int) -> LimiterWrite:
            seen.append(levels)
            return LimiterWrite()

        self.store.rate_limit_step(key.id, now, False, step)
        return [_state(limit, in_use(seen[0], limit, now)) for limit in key.limits]

    def release(
        self, key: ApiKey, decision: Decision, charged: Cost, used: Cost | None, now: float, wait: bool = True
    ) -> bool:
        """A request admitted by `decision` ended: give back its lease and settle what it
        was `charged` with what it `used` (None: as charged). With `wait` False, only if
        the store can at once (as `try_acquire`); whether it was done."""
        delta = (
            Cost(0, used.input_tokens - charged.input_tokens, used.output_tokens - charged.output_tokens)
            if used
            else Cost(0)
        )
        if decision.lease is None and not any(delta.of(k) for k in TOKEN_KINDS):
            return True

        def step(levels: Levels, running: int) -> LimiterWrite:
            return LimiterWrite(settle(key.limits, levels, delta, now), drop_lease=decision.lease)

        return self.store.rate_limit_step(key.id, now, False, step, wait)
