"""Sorted sets of disjoint half-open integer ranges: acknowledged packet numbers, received and
acknowledged stream bytes. The common case (a range extending the highest one) is O(1); the rest
use bisect, so cost grows with the number of holes, never with the number of values.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class RangeSet:
    """Disjoint `[start, end)` ranges kept sorted and merged (adjacent ranges join)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or ():
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Insert `[start, end)`, merging with every range it touches."""
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        if not starts or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return
        if start >= starts[-1]:  # fast path: touches the last range only
            if end > ends[-1]:
                ends[-1] = end
            return
        # first range whose end >= start, last range whose start <= end
        lo = bisect_left(ends, start)
        hi = bisect_right(starts, end)
        if lo == hi:
            starts.insert(lo, start)
            ends.insert(lo, end)
            return
        new_start = min(start, starts[lo])
        new_end = max(end, ends[hi - 1])
        starts[lo:hi] = [new_start]
        ends[lo:hi] = [new_end]

    def remove(self, start: int, end: int) -> None:
        """Delete `[start, end)` from the set, splitting a range if needed."""
        if start >= end or not self._starts:
            return
        starts, ends = self._starts, self._ends
        lo = bisect_right(ends, start)
        hi = bisect_left(starts, end)
        if lo >= hi:
            return
        new_starts: list[int] = []
        new_ends: list[int] = []
        if starts[lo] < start:
            new_starts.append(starts[lo])
            new_ends.append(start)
        if ends[hi - 1] > end:
            new_starts.append(end)
            new_ends.append(ends[hi - 1])
        starts[lo:hi] = new_starts
        ends[lo:hi] = new_ends

    def contains(self, value: int) -> bool:
        starts = self._starts
        if starts and value >= starts[-1]:  # the newest range: no bisect (a generic call)
            return value < self._ends[-1]
        i = bisect_right(starts, value) - 1
        return i >= 0 and value < self._ends[i]

    def covers(self, start: int, end: int) -> bool:
        """True when all of `[start, end)` is in the set (an empty range always is)."""
        if start >= end:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and end <= self._ends[i]

    def first(self) -> tuple[int, int] | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    def last(self) -> tuple[int, int] | None:
        return (self._starts[-1], self._ends[-1]) if self._starts else None

    def pop_first(self) -> tuple[int, int]:
        return self._starts.pop(0), self._ends.pop(0)

    def drop_oldest(self, keep: int) -> None:
        """Forget all but the `keep` highest ranges (bounds memory against many holes)."""
        if len(self._starts) > keep:
            del self._starts[: len(self._starts) - keep]
            del self._ends[: len(self._ends) - keep]

    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def range_at(self, index: int) -> tuple[int, int]:
        """The `index`-th range from the lowest (negative: from the highest). An index loop over
        this is what the ACK encoder runs per packet: compiled, `reversed(rangeset)` built a
        generic `zip` and two reverse iterators each time (1.8 % of a node's CPU in ping-pong)."""
        return self._starts[index], self._ends[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"
