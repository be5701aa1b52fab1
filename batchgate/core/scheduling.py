"""Scheduling decisions: which batches' lines a worker claims next, how many it claims
ahead of its free slots and in which order they start, which batches are at risk of
missing their completion window, and the live concurrency of each upstream.

Interactive requests go ahead of batch lines at each backend (the local engine's queue;
an upstream's `PriorityGate`). Here, claim time: a claim's slots go first to batches at
risk of missing their window (earliest deadline first, up to `DEADLINE_SHARE` of the
claim), then within each priority class fairly to projects (by weight), within a
project to its keys, within a key to its batches. "Fairly" is max-min: a share a
project cannot use (a 10-line batch) goes to the others. Stores collect the candidates
(`store/scheduling_sql.py`) and apply the plan; they do not decide it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from batchgate.core.models import BatchRecord, ClaimedRequest
from batchgate.core.states import BatchStatus

DEADLINE_SHARE = 0.75  # of a claim, the most at-risk batches take: a hopeless batch cannot starve the rest
# with no line done yet there is no throughput to judge by: at risk in the window's last tenth
NO_PROGRESS_MARGIN = 0.1

K = TypeVar("K")


@dataclass(slots=True)
class ClaimCandidate:
    """A runnable batch, as a claim sees it."""

    ref: Any  # the store's handle on the batch (its pk)
    project_id: str
    key_id: str | None
    weight: float  # the project's weight
    priority: int
    waiting: int  # lines not claimed yet, requeued ones included (an upper bound will do)
    total: int
    done: int  # completed + failed
    created_at: int
    started_at: int | None  # in_progress_at
    expires_at: int


def at_risk(total: int, done: int, created_at: int, started_at: int | None, expires_at: int, now: int) -> bool:
    """Whether a running batch, at its throughput so far (lines done per second since it
    started), would not finish its remaining lines before it expires."""
    remaining = total - done
    if remaining <= 0:
        return False
    left = expires_at - now
    if left <= 0:
        return True
    if done <= 0:
        return left < NO_PROGRESS_MARGIN * (expires_at - created_at)
    elapsed = max(now - (started_at if started_at is not None else created_at), 1)
    return remaining * elapsed / done > left


def batch_at_risk(batch: BatchRecord, now: int) -> bool:
    """`at_risk` for a batch record: only a batch in progress can be."""
    if batch.status != BatchStatus.IN_PROGRESS or batch.upstream is not None:
        return False
    return at_risk(
        batch.total, batch.completed + batch.failed, batch.created_at, batch.in_progress_at, batch.expires_at, now
    )


def plan_claims(candidates: Sequence[ClaimCandidate], limit: int, now: int) -> list[tuple[ClaimCandidate, int]]:
    """How many lines to claim from each candidate (those with none left out), in the
    order to claim them: at-risk batches first, by deadline."""
    demand = {id(c): c.waiting for c in candidates}
    plan: dict[int, int] = {}
    risky = sorted(
        (c for c in candidates if at_risk(c.total, c.done, c.created_at, c.started_at, c.expires_at, now)),
        key=lambda c: c.expires_at,
    )
    others = len(risky) < len(candidates)
    budget = int(limit * DEADLINE_SHARE) if others else limit
    for c in risky:
        take = min(demand[id(c)], budget)
        if take > 0:
            plan[id(c)] = take
            demand[id(c)] -= take
            budget -= take
    left = limit - sum(plan.values())
    for priority in sorted({c.priority for c in candidates}, reverse=True):
        tier = [c for c in candidates if c.priority == priority and demand[id(c)] > 0]
        for c, take in _fair(tier, demand, left):
            plan[id(c)] = plan.get(id(c), 0) + take
            left -= take
        if left <= 0:
            break
    first = {id(c) for c in risky}
    order = [*risky, *sorted((c for c in candidates if id(c) not in first), key=lambda c: -c.priority)]
    return [(c, plan[id(c)]) for c in order if plan.get(id(c), 0) > 0]


def _fair(tier: list[ClaimCandidate], demand: dict[int, int], capacity: int) -> Iterator[tuple[ClaimCandidate, int]]:
    """Projects (weighted), then keys, then batches: each level max-min fair."""
    projects = _groups(tier, lambda c: c.project_id)
    weights = [group[0].weight for group in projects.values()]
    wants = [sum(demand[id(c)] for c in group) for group in projects.values()]
    for group, share in zip(projects.values(), water_fill(wants, weights, capacity), strict=True):
        keys = _groups(group, lambda c: c.key_id or "")
        wants = [sum(demand[id(c)] for c in batches) for batches in keys.values()]
        for batches, key_share in zip(keys.values(), water_fill(wants, [1.0] * len(keys), share), strict=True):
            wants = [demand[id(c)] for c in batches]
            for c, take in zip(batches, water_fill(wants, [1.0] * len(batches), key_share), strict=True):
                if take > 0:
                    yield c, take


def water_fill(demands: Sequence[int], weights: Sequence[float], capacity: int) -> list[int]:
    """Split `capacity` units among claimants in proportion to `weights`, none getting
    more than its demand; what one cannot use goes to the others (max-min fairness).
    When there are fewer units than claimants, the first ones get them."""
    alloc = [0] * len(demands)
    active = [i for i, d in enumerate(demands) if d > 0 and weights[i] > 0]
    while capacity > 0 and active:
        total_weight = sum(weights[i] for i in active)
        round_capacity = capacity
        for i in active:
            give = min(demands[i] - alloc[i], max(1, int(round_capacity * weights[i] / total_weight)), capacity)
            alloc[i] += give
            capacity -= give
            if capacity == 0:
                break
        active = [i for i in active if alloc[i] < demands[i]]
    return alloc


def _groups(items: Iterable[ClaimCandidate], key: Callable[[ClaimCandidate], K]) -> dict[K, list[ClaimCandidate]]:
    groups: dict[K, list[ClaimCandidate]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


# ---- lines claimed ahead: how many, and the order they start in -------------------------


def lines_ahead(rate: float, concurrency: int, claim_batch: int, seconds: float) -> int:
    """How many lines a worker claims ahead of its free slots: `seconds` of work at the
    rate lines finish (lines/s), at least one per slot (up to a claim) and at most a
    claim. Enough to cover a claim's round trip through the store; no more, as claimed
    lines are no longer anyone else's to run."""
    least = min(claim_batch, concurrency)
    return max(least, min(int(rate * seconds), claim_batch))


class ReadyLines:
    """The lines a worker claimed ahead of its free slots, started in turns across their
    batches. A claim decides how many lines each batch gets; this decides the order they
    start in, so that a batch whose first lines were just claimed does not wait behind
    the lines another batch had claimed ahead."""

    def __init__(self) -> None:
        self._batches: dict[str, deque[ClaimedRequest]] = {}  # in turn order
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def extend(self, claims: Iterable[ClaimedRequest]) -> None:
        for claim in claims:
            self._batches.setdefault(claim.batch_id, deque()).append(claim)
            self._count += 1

    def pop(self) -> ClaimedRequest:
        """The next line to start: the first of the batch whose turn it is."""
        batch_id, lines = next(iter(self._batches.items()))
        del self._batches[batch_id]
        if len(lines) > 1:
            self._batches[batch_id] = lines  # its next line waits for the other batches' turns
        self._count -= 1
        return lines.popleft()

    def batch_ids(self) -> set[str]:
        return set(self._batches)

    def take(self, batch_id: str) -> list[ClaimedRequest]:
        """Remove and return one batch's lines."""
        lines = self._batches.pop(batch_id, ())
        self._count -= len(lines)
        return list(lines)

    def clear(self) -> None:
        self._batches.clear()
        self._count = 0


# ---- upstream concurrency ---------------------------------------------------------------


@dataclass(slots=True)
class UpstreamConcurrency:
    """One upstream's adaptive concurrency now (engines/openai_compat/limits.PriorityGate)."""

    name: str
    limit: int  # slots now
    max_limit: int  # the configured max_concurrency
    in_flight: int
    waiting_interactive: int
    waiting_batch: int
    batch_paused_for: float  # seconds left of a Retry-After pause of batch admissions


def upstream_concurrency(backend: Any) -> list[UpstreamConcurrency]:
    """The live concurrency of every upstream behind `backend` (the wrappers' `inner`,
    the router's `backends`), by name. What /metrics and GET /v1/admin/scheduling read."""
    found: dict[str, UpstreamConcurrency] = {}
    seen: set[int] = set()
    todo = [backend]
    while todo:
        b = todo.pop()
        if id(b) in seen:
            continue
        seen.add(id(b))
        report = getattr(b, "concurrency", None)
        if callable(report):
            snapshot = report()
            found[snapshot.name] = snapshot
        if (inner := getattr(b, "inner", None)) is not None:
            todo.append(inner)
        todo.extend(getattr(b, "backends", {}).values())
    return [found[name] for name in sorted(found)]
