"""Deadlines of many state machines in one heap: nothing walks them all for the next (sans-IO).

The device keeps one entry per session and the node one per peer; each asks only the heap for
its earliest deadline and pops only what is due, instead of calling every machine's `get_timer()`
on every flush (17.8 ms at 3,000 sessions before this existed).

An entry is a *lower bound*: a machine's real deadline may be later than its entry (a timer moved
later or was cancelled), never earlier. So the hot paths that only push timers later (a keepalive
postponed by each packet sent) touch nothing here, and `schedule` pushes a new entry only when a
deadline moves earlier than the one already queued. When an entry comes due its owner is asked
for its real deadline and scheduled again with it (`due` hands the key back; the owner reschedules).
Superseded entries stay in the heap until they surface and are skipped; the heap is rebuilt when
they outnumber the live ones, so it stays O(machines) in size.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_COMPACT_MIN: Final = 64  # entries; below this a heap of stale entries costs less than a rebuild


class TimerHeap(Generic[K]):
    """The earliest deadline of many keys; see the module docstring."""

    __slots__ = ("_heap", "_order", "_scheduled")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._scheduled: dict[K, float] = {}  # key -> its one live entry's deadline
        self._order = 0  # ties: first scheduled, first due; keys never compared

    def schedule(self, key: K, deadline: float | None) -> None:
        """`key` has a deadline at or after `deadline` (None: none it knows of yet).

        A later deadline than the queued one changes nothing: the queued entry comes due first
        and its owner then reschedules with what is left.
        """
        if deadline is None:
            return
        queued = self._scheduled.get(key)
        if queued is not None and queued <= deadline:
            return
        self._scheduled[key] = deadline
        self._order += 1
        heapq.heappush(self._heap, (deadline, self._order, key))
        if len(self._heap) > 2 * len(self._scheduled) + _COMPACT_MIN:
            self._compact()

    def discard(self, key: K) -> None:
        """Forget `key` (its machine is gone); its entries are skipped when they surface, or
        dropped sooner by a rebuild, so a heap of gone machines does not keep them alive."""
        self._scheduled.pop(key, None)
        if len(self._heap) > 2 * len(self._scheduled) + _COMPACT_MIN:
            self._compact()

    def earliest(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap:
            deadline, _, key = heap[0]
            if self._scheduled.get(key) == deadline:
                return deadline
            heapq.heappop(heap)  # superseded or discarded
        return None

    def pop_due(self, now: float) -> list[K]:
        """Every key whose entry is due at `now`, each once; they are no longer scheduled.

        The caller runs each one's timers and schedules it again with its next deadline.
        """
        due: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if self._scheduled.get(key) == deadline:
                del self._scheduled[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        heap: list[tuple[float, int, K]] = []
        for key, deadline in self._scheduled.items():
            self._order += 1
            heap.append((deadline, self._order, key))
        heapq.heapify(heap)
        self._heap = heap

    def __len__(self) -> int:
        """Keys scheduled."""
        return len(self._scheduled)

    def __contains__(self, key: object) -> bool:
        return key in self._scheduled
