"""The anti-replay window: duplicates never pass, reordering inside the window does."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.session.replay import WINDOW_SIZE, ReplayWindow


def test_window_is_at_least_8128() -> None:
    assert WINDOW_SIZE >= 8128


def test_in_order_then_replay() -> None:
    window = ReplayWindow()
    assert all(window.accept(n) for n in range(20_000))
    assert not any(window.accept(n) for n in range(20_000))


def test_reordering_inside_window_accepted() -> None:
    window = ReplayWindow()
    counters = list(range(WINDOW_SIZE))
    random.Random(7).shuffle(counters)
    assert all(window.accept(n) for n in counters)
    assert not any(window.accept(n) for n in counters)


def test_window_edges() -> None:
    window = ReplayWindow()
    top = 100_000
    assert window.accept(top)
    assert window.accept(top - WINDOW_SIZE)  # oldest still inside
    assert not window.accept(top - WINDOW_SIZE - 1)  # just outside
    assert not window.accept(top - WINDOW_SIZE)  # seen


def test_big_jump_clears_ring() -> None:
    window = ReplayWindow()
    for n in range(0, 300):
        window.accept(n)
    assert window.accept(10**9)
    assert window.accept(10**9 - 5)
    assert not window.accept(299)


def test_limit() -> None:
    window = ReplayWindow()
    assert not window.accept(50, limit=50)
    assert window.accept(49, limit=50)


@settings(max_examples=2_000, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * WINDOW_SIZE), max_size=300))
def test_never_accepts_duplicate_and_matches_model(counters: list[int]) -> None:
    window = ReplayWindow()
    seen: set[int] = set()
    top = -1
    for n in counters:
        expected = n not in seen and (n > top or top - n <= WINDOW_SIZE)
        got = window.accept(n)
        if got:
            assert n not in seen
            seen.add(n)
            top = max(top, n)
        # Inside the guaranteed window the model and the ring agree exactly.
        if n > top - WINDOW_SIZE:
            assert got == expected
