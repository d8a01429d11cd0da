"""RangeSet against a plain set-of-integers model, by example and by hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.channel.rangeset import RangeSet


def as_set(ranges: RangeSet) -> set[int]:
    return {i for start, end in ranges for i in range(start, end)}


def test_adjacent_ranges_merge() -> None:
    r = RangeSet()
    r.add(0, 5)
    r.add(5, 10)
    r.add(20, 30)
    r.add(10, 20)
    assert list(r) == [(0, 30)]


def test_remove_splits() -> None:
    r = RangeSet([(0, 10)])
    r.remove(3, 5)
    assert list(r) == [(0, 3), (5, 10)]
    assert r.contains(2) and not r.contains(3) and r.contains(5)
    assert r.covers(5, 10) and not r.covers(2, 6)


def test_drop_oldest_keeps_highest() -> None:
    r = RangeSet([(i * 10, i * 10 + 5) for i in range(10)])
    r.drop_oldest(3)
    assert list(r) == [(70, 75), (80, 85), (90, 95)]


ops = st.lists(
    st.tuples(st.booleans(), st.integers(0, 200), st.integers(0, 40)), min_size=1, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_matches_a_set_model(operations: list[tuple[bool, int, int]]) -> None:
    r = RangeSet()
    model: set[int] = set()
    for add, start, length in operations:
        if add:
            r.add(start, start + length)
            model |= set(range(start, start + length))
        else:
            r.remove(start, start + length)
            model -= set(range(start, start + length))
        assert as_set(r) == model
        items = list(r)
        # sorted, disjoint, non-adjacent, non-empty
        assert all(s < e for s, e in items)
        assert all(items[i][1] < items[i + 1][0] for i in range(len(items) - 1))
        assert [r.range_at(i) for i in range(len(r))] == items
        if items:
            assert r.range_at(-1) == items[-1]
    for probe in range(0, 245, 7):
        assert r.contains(probe) == (probe in model)
