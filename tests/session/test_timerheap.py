"""`tunnel.timerheap`: one heap of lower-bound deadlines instead of a walk over every machine."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tunnel.timerheap import TimerHeap


def test_earliest_and_due_follow_the_earliest_schedule_of_each_key() -> None:
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule("a", 5.0)
    heap.schedule("b", 3.0)
    heap.schedule("a", 7.0)  # later than queued: the entry at 5 stands (a lower bound)
    heap.schedule("a", 2.0)  # earlier: queued
    heap.schedule("c", None)
    assert heap.earliest() == 2.0 and len(heap) == 2 and "c" not in heap
    assert heap.pop_due(3.0) == ["a", "b"]
    assert heap.earliest() is None and heap.pop_due(100.0) == []  # a's entry at 5 is stale


def test_discarded_keys_never_come_due() -> None:
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule("gone", 1.0)
    heap.schedule("kept", 2.0)
    heap.discard("gone")
    assert heap.earliest() == 2.0 and heap.pop_due(10.0) == ["kept"]


def test_stale_entries_are_compacted_away() -> None:
    heap: TimerHeap[int] = TimerHeap()
    for step in range(10_000):
        heap.schedule(step % 10, 10_000.0 - step)  # always earlier: always a push
    assert len(heap) == 10 and len(heap._heap) <= 2 * 10 + 64


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100)), max_size=200),
       st.floats(0, 100))
def test_due_keys_are_exactly_those_whose_earliest_schedule_has_passed(
        schedules: list[tuple[int, float]], now: float) -> None:
    heap: TimerHeap[int] = TimerHeap()
    earliest: dict[int, float] = {}
    for key, deadline in schedules:
        heap.schedule(key, deadline)
        earliest[key] = min(deadline, earliest.get(key, deadline))
    due = heap.pop_due(now)
    assert sorted(due) == sorted(k for k, d in earliest.items() if d <= now)
    remaining = [d for d in earliest.values() if d > now]
    assert heap.earliest() == (min(remaining) if remaining else None)


def test_three_thousand_deadlines_fire_in_order() -> None:
    rng = random.Random(1)
    heap: TimerHeap[int] = TimerHeap()
    deadlines = {k: rng.uniform(0, 100) for k in range(3000)}
    for key, at in deadlines.items():
        heap.schedule(key, at)
    fired = []
    while (earliest := heap.earliest()) is not None:
        fired += [(deadlines[k], k) for k in heap.pop_due(earliest)]
    assert fired == sorted(fired) and len(fired) == 3000
