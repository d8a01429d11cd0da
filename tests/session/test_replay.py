"""The anti-replay window: duplicates never pass, reordering inside the window does.

Every test runs against both windows: `replay.py` (the Python twin's) and the C data plane's.
The last one judges sealed datagrams through `open_batch`, once per transport cipher.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.datapaths import IMPLEMENTATIONS, datapath, datapath_module
from tunnel.session import datapath_pure as verdicts
from tunnel.session.constants import AES_GCM_REJECT_AFTER_MESSAGES
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305
from tunnel.session.replay import WINDOW_SIZE
from tunnel.session.wire import HEADER_TRANSPORT

__all__ = ["datapath"]  # the fixture: every test below runs once per implementation


def windows() -> list[ModuleType]:
    """Both implementations, for a hypothesis test (fixtures do not mix with @given)."""
    return [datapath_module(name) for name in IMPLEMENTATIONS]


def test_window_is_at_least_8128(datapath: ModuleType) -> None:
    assert WINDOW_SIZE >= 8128
    assert datapath.WINDOW_SIZE == WINDOW_SIZE


def test_in_order_then_replay(datapath: ModuleType) -> None:
    window = datapath.ReplayWindow()
    assert all(window.accept(n) for n in range(20_000))
    assert not any(window.accept(n) for n in range(20_000))


def test_reordering_inside_window_accepted(datapath: ModuleType) -> None:
    window = datapath.ReplayWindow()
    counters = list(range(WINDOW_SIZE))
    random.Random(7).shuffle(counters)
    assert all(window.accept(n) for n in counters)
    assert not any(window.accept(n) for n in counters)


def test_window_edges(datapath: ModuleType) -> None:
    window = datapath.ReplayWindow()
    top = 100_000
    assert window.accept(top)
    assert window.accept(top - WINDOW_SIZE)  # oldest still inside
    assert not window.accept(top - WINDOW_SIZE - 1)  # just outside
    assert not window.accept(top - WINDOW_SIZE)  # seen


def test_big_jump_clears_ring(datapath: ModuleType) -> None:
    window = datapath.ReplayWindow()
    for n in range(0, 300):
        window.accept(n)
    assert window.accept(10**9)
    assert window.accept(10**9 - 5)
    assert not window.accept(299)


def test_limit(datapath: ModuleType) -> None:
    window = datapath.ReplayWindow()
    assert not window.accept(50, limit=50)
    assert window.accept(49, limit=50)


@settings(max_examples=2_000, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3 * WINDOW_SIZE), max_size=300))
def test_never_accepts_duplicate_and_matches_model(counters: list[int]) -> None:
    for implementation in windows():
        check_against_model(implementation.ReplayWindow(), counters)


def check_against_model(window: object, counters: list[int]) -> None:
    accept = window.accept  # type: ignore[attr-defined]
    seen: set[int] = set()
    top = -1
    for n in counters:
        expected = n not in seen and (n > top or top - n <= WINDOW_SIZE)
        got = accept(n)
        if got:
            assert n not in seen
            seen.add(n)
            top = max(top, n)
        # Inside the guaranteed window the model and the ring agree exactly.
        if n > top - WINDOW_SIZE:
            assert got == expected


@settings(max_examples=1_000, deadline=None)
@given(st.lists(st.one_of(st.integers(min_value=0, max_value=3 * WINDOW_SIZE),
                          st.integers(min_value=-5, max_value=2**64 + 5)), max_size=200),
       st.integers(min_value=-1, max_value=2**65))
def test_c_and_python_windows_agree(counters: list[int], limit: int) -> None:
    """Same answers and the same state after every counter, including nonsense ones."""
    c_window, py_window = (m.ReplayWindow() for m in windows())
    for n in counters:
        assert c_window.accept(n, limit=limit) == py_window.accept(n, limit=limit)
        assert c_window.accept(n) == py_window.accept(n)
        assert c_window.state() == py_window.state()


@pytest.mark.parametrize("counter", [-1, 2**64, 2**64 + 1])
def test_not_a_u64_is_refused(datapath: ModuleType, counter: int) -> None:
    window = datapath.ReplayWindow()
    assert not window.accept(counter, limit=2**70)
    assert window.state() == datapath.ReplayWindow().state()


@dataclass
class Keys:
    """A table value of `open_batch`: what a session's index table holds."""

    receive: Any


@pytest.mark.parametrize("cipher", [CHACHA20_POLY1305, AES_256_GCM],
                         ids=["chacha20-poly1305", "aes-256-gcm"])
@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(min_value=0, max_value=3 * WINDOW_SIZE),
                          st.integers(min_value=AES_GCM_REJECT_AFTER_MESSAGES - 2,
                                      max_value=AES_GCM_REJECT_AFTER_MESSAGES + 1)),
                min_size=1, max_size=60),
       st.booleans())
def test_sealed_datagrams_are_judged_by_the_window_under_each_cipher(
    cipher: int, counters: list[int], limited: bool
) -> None:
    """Datagrams sealed under `counters` (repeats, reordering, jumps, counters at the AES-GCM
    limit), opened as one GRO buffer: each twin says OK exactly where a bare window with the
    key's limit accepts, REPLAY elsewhere, and both end in the same state."""
    key, index = bytes(range(32)), b"\x01\x02\x03\x04"
    limit = AES_GCM_REJECT_AFTER_MESSAGES if limited else 2**64 - 2**13 - 1
    size = 16 + 32  # all payloads 16 bytes: one GRO segment size
    for implementation in windows():
        sealer = implementation.Sealer(key, HEADER_TRANSPORT + index, cipher)
        data = b"".join(sealer.seal(n.to_bytes(16, "little"), n) for n in counters)
        table = {index: Keys(implementation.Opener(key, 100.0, cipher, limit))}
        model = implementation.ReplayWindow()
        expected = [verdicts.OK if model.accept(n, limit) else verdicts.REPLAY for n in counters]
        results = implementation.open_batch(table, data, size, 1.0)
        assert [v for v, _, _ in results] == expected
        assert [p for v, _, p in results if v == verdicts.OK] == [
            n.to_bytes(16, "little") for n, v in zip(counters, expected, strict=True)
            if v == verdicts.OK]
        assert table[index].receive.replay.state() == model.state()
