"""The upstream gate (engines/openai_compat/limits.PriorityGate): interactive before batch,
batch shares taking turns, AIMD on overloads, Retry-After pausing batch admissions."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from batchgate.engines.openai_compat.limits import DECREASE, INTERACTIVE_RESERVE_S, PriorityGate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_caps_holders_across_event_loops() -> None:
    gate = PriorityGate(3)
    holding, peak = 0, 0
    lock = threading.Lock()

    async def hold() -> None:
        nonlocal holding, peak
        permit = await gate.acquire(interactive=False)
        with lock:
            holding += 1
            peak = max(peak, holding)
        await asyncio.sleep(0.01)
        with lock:
            holding -= 1
        permit.release()

    async def many() -> None:
        await asyncio.gather(*(hold() for _ in range(20)))

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(3)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 3 and holding == 0
    assert time.perf_counter() - started >= 60 / 3 * 0.01 * 0.9  # 60 holds of 10 ms, 3 at a time


async def _order_of(gate: PriorityGate, arrivals: list[tuple[str, bool, str]]) -> list[str]:
    """Hold the gate's one slot, queue the arrivals in order, then let them through one at
    a time: the order they got the slot."""
    order: list[str] = []
    first = await gate.acquire(interactive=False)

    async def one(name: str, interactive: bool, share: str) -> None:
        project, _, batch = share.partition("/")
        permit = await gate.acquire(interactive, (project, batch))
        order.append(name)
        await asyncio.sleep(0)
        permit.release()

    tasks = []
    for name, interactive, share in arrivals:
        tasks.append(asyncio.create_task(one(name, interactive, share)))
        await asyncio.sleep(0)  # queued in this order
    first.release()
    await asyncio.gather(*tasks)
    return order


def test_waiting_interactive_requests_get_the_next_slot_before_batch_lines() -> None:
    arrivals = [("b1", False, ""), ("b2", False, ""), ("i1", True, ""), ("b3", False, ""), ("i2", True, "")]
    assert asyncio.run(_order_of(PriorityGate(1), arrivals)) == ["i1", "i2", "b1", "b2", "b3"]


def test_batch_lines_of_different_projects_take_turns() -> None:
    arrivals = [(f"a{i}", False, "A") for i in range(4)] + [("b0", False, "B"), ("b1", False, "B")]
    assert asyncio.run(_order_of(PriorityGate(1), arrivals)) == ["a0", "b0", "a1", "b1", "a2", "a3"]


def test_batches_of_one_project_take_turns_within_its_share() -> None:
    # project A's big batch x queued first, then its 2-line batch y, then project B
    arrivals = [(f"x{i}", False, "A/x") for i in range(4)] + [("y0", False, "A/y"), ("y1", False, "A/y")]
    arrivals.append(("b0", False, "B/z"))
    order = asyncio.run(_order_of(PriorityGate(1), arrivals))
    assert order == ["x0", "b0", "y0", "x1", "y1", "x2", "x3"]


def test_a_cancelled_waiter_leaves_the_queue_and_the_slot_passes_on() -> None:
    async def run() -> int:
        gate = PriorityGate(1)
        held = await gate.acquire(False)
        waiter = asyncio.create_task(gate.acquire(False, ("A", "a")))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        held.release()
        permit = await asyncio.wait_for(gate.acquire(True), 1)
        permit.release()
        return gate.snapshot("u").in_flight

    assert asyncio.run(run()) == 0


def test_an_overload_cuts_the_limit_once_per_wave() -> None:
    clock = Clock()
    gate = PriorityGate(20, clock=clock)

    async def run() -> None:
        wave = [await gate.acquire(False) for _ in range(20)]
        clock.now += 1
        for permit in wave:  # 20 answers of 429 to requests sent together: one cut
            gate.overloaded(permit, None)
            permit.release()
        assert gate.limit == int(20 * DECREASE) == 14
        clock.now += 1
        after = await gate.acquire(False)
        gate.overloaded(after, None)  # sent after the cut: it says something new
        after.release()
        assert gate.limit == int(14 * DECREASE) == 9

    asyncio.run(run())


def test_an_overload_sent_above_the_new_limit_does_not_count_as_an_attempt() -> None:
    clock = Clock()
    gate = PriorityGate(10, clock=clock)

    async def run() -> list[bool]:
        wave = [await gate.acquire(False) for _ in range(10)]
        counted = [gate.overloaded(p, None) for p in wave]
        for p in wave:
            p.release()
        return counted

    counted = asyncio.run(run())
    assert counted == [True] * 7 + [False] * 3  # the limit is 7 now: the 8th to 10th were the gateway's excess


def test_successes_grow_the_limit_fast_to_the_last_overload_then_one_slot_per_window() -> None:
    gate = PriorityGate(40, clock=Clock())

    async def run() -> None:
        permit = await gate.acquire(False)
        gate.overloaded(permit, None)  # the cut is from the limit (40), not from the slots in use
        permit.release()
        assert gate.limit == 28
        for _ in range(11):  # fast recovery: a slot per success, up to just below the last overload
            gate.succeeded()
        assert gate.limit == 39
        for _ in range(39):  # then additive: about one slot per limit's worth of successes
            gate.succeeded()
        assert gate.limit == 39
        gate.succeeded()
        assert gate.limit == 40
        for _ in range(200):
            gate.succeeded()
        assert gate.limit == 40  # never above the configured maximum

    asyncio.run(run())


def test_retry_after_pauses_batch_admissions_but_not_interactive_ones() -> None:
    async def run() -> tuple[float, float]:
        gate = PriorityGate(4)
        p = await gate.acquire(False)
        gate.overloaded(p, 0.3)
        p.release()
        assert gate.snapshot("u").batch_paused_for > 0.2
        started = time.perf_counter()
        interactive = await asyncio.wait_for(gate.acquire(True), 1)
        interactive_wait = time.perf_counter() - started
        interactive.release()
        batch = await asyncio.wait_for(gate.acquire(False), 2)
        batch_wait = time.perf_counter() - started
        batch.release()
        return interactive_wait, batch_wait

    interactive_wait, batch_wait = asyncio.run(run())
    assert interactive_wait < 0.05
    assert batch_wait >= 0.25


def test_the_snapshot_reports_the_current_limit_and_queues() -> None:
    async def run() -> None:
        gate = PriorityGate(1)
        held = await gate.acquire(False)

        async def through(interactive: bool) -> None:
            (await gate.acquire(interactive, ("A", "a"))).release()

        waiters = [asyncio.create_task(through(i % 2 == 0)) for i in range(3)]
        await asyncio.sleep(0)
        snap = gate.snapshot("gpu")
        assert (snap.name, snap.limit, snap.max_limit, snap.in_flight) == ("gpu", 1, 1, 1)
        assert (snap.waiting_interactive, snap.waiting_batch) == (2, 1)
        held.release()
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        assert gate.snapshot("gpu").in_flight == 0

    asyncio.run(run())


@pytest.mark.parametrize("limit", [1, 5])
def test_a_gate_never_grants_more_than_its_limit(limit: int) -> None:
    async def run() -> int:
        gate = PriorityGate(limit)
        peak = 0

        async def one(i: int) -> None:
            nonlocal peak
            permit = await gate.acquire(i % 3 == 0, (str(i % 2), str(i % 5)))
            peak = max(peak, gate.snapshot("u").in_flight)
            await asyncio.sleep(0.001)
            permit.release()

        await asyncio.gather(*(one(i) for i in range(50)))
        return peak

    assert asyncio.run(run()) == limit


def test_a_limit_that_is_not_used_does_not_grow() -> None:
    gate = PriorityGate(40, clock=Clock())

    async def run() -> None:
        first = await gate.acquire(False)
        gate.overloaded(first, None)
        first.release()
        assert gate.limit == 28
        for _ in range(50):  # one request at a time: 27 slots to spare each time
            permit = await gate.acquire(False)
            gate.succeeded(permit)
            permit.release()
        assert gate.limit == 28

    asyncio.run(run())


def test_while_interactive_requests_keep_coming_batch_lines_leave_a_slot_free() -> None:
    clock = Clock()
    gate = PriorityGate(3, clock=clock)

    async def run() -> None:
        batch = [await gate.acquire(False) for _ in range(3)]  # no interactive traffic yet: every slot
        for p in batch:
            p.release()
        (await gate.acquire(True)).release()  # an interactive request: from now on one slot is kept
        held = [await gate.acquire(False) for _ in range(2)]
        third = asyncio.create_task(gate.acquire(False))
        await asyncio.sleep(0.01)
        assert not third.done() and gate.snapshot("u").in_flight == 2, "the reserved slot stays free"
        interactive = await asyncio.wait_for(gate.acquire(True), 0.5)  # finds it at once
        assert gate.snapshot("u").in_flight == 3
        interactive.release()
        held.pop().release()  # a batch slot frees: the waiting line takes it, the reserve stays
        assert (await asyncio.wait_for(third, 0.5)).in_flight == 2
        clock.now += INTERACTIVE_RESERVE_S  # no interactive request for a while: batch may fill the limit
        assert (await asyncio.wait_for(gate.acquire(False), 0.5)).in_flight == 3

    asyncio.run(run())


def test_a_gate_of_one_slot_keeps_no_reserve() -> None:
    async def run() -> int:
        gate = PriorityGate(1)
        (await gate.acquire(True)).release()
        return (await asyncio.wait_for(gate.acquire(False), 0.5)).in_flight

    assert asyncio.run(run()) == 1
