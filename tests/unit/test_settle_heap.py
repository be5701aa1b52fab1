"""`settle_heap`: what `serve`, `worker` and `run` do with the cyclic collector once started."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from batchgate.app import YOUNG_GC_THRESHOLD, settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def settled() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        settle_heap()
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_start_up_objects_are_frozen_and_the_young_generation_collected_less_often(settled: None) -> None:
    # everything alive at start-up (this test process's modules, at least) is frozen
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD
    assert gc.isenabled()


def test_cyclic_garbage_is_still_collected_without_an_explicit_collect(settled: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None
    # allocations past the thresholds trigger collections by themselves: enough for the
    # middle generation too, in case a young collection promoted the cycle before `del`
    enough = (gc.get_threshold()[1] + 1) * YOUNG_GC_THRESHOLD
    kept = [[] for _ in range(enough)]
    assert gone() is None
    assert len(kept) == enough
