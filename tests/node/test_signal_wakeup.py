"""A one-shot query's wait ends at once for a signal, even one that came before the wait began
(`ptunnel list` under load once took 1.2 s to stop: the signal landed between its sendto() and
its select(), and the select() slept through the 1 s retry timer)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from tunnel.node.netcheck import signal_wakeup, wait_readable

WAIT = 5.0  # s; a wait that ends well before this was ended by the wakeup, not its timeout


@pytest.fixture
def udp() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind(("127.0.0.1", 0))
        yield receiver, sender


@pytest.fixture
def usr1() -> Iterator[list[int]]:
    """SIGUSR1 with a Python handler that records it, blocked until the test unblocks it."""
    seen: list[int] = []

    def record(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGUSR1, record)
    try:
        yield seen
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        signal.signal(signal.SIGUSR1, previous)


def test_a_datagram_or_the_timeout_ends_the_wait(
        udp: tuple[socket.socket, socket.socket]) -> None:
    receiver, sender = udp
    with signal_wakeup() as wakeup:
        assert wakeup is not None
        assert wait_readable(receiver, 0.01, wakeup) is False
        sender.sendto(b"x", receiver.getsockname())
        assert wait_readable(receiver, WAIT, wakeup) is True


def test_a_signal_that_came_before_the_wait_ends_it_at_once(
        udp: tuple[socket.socket, socket.socket], usr1: list[int]) -> None:
    receiver, _ = udp
    with signal_wakeup() as wakeup:
        # The signal is handled before the wait starts, as when it lands between a sendto()
        # and the select(): only the wakeup fd still knows of it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        assert usr1 == [signal.SIGUSR1]
        start = time.monotonic()
        assert wait_readable(receiver, WAIT, wakeup) is False
        assert time.monotonic() - start < WAIT / 2
        # The wakeup was consumed: the next wait lasts its timeout.
        start = time.monotonic()
        assert wait_readable(receiver, 0.05, wakeup) is False
        assert time.monotonic() - start >= 0.04


def test_the_previous_wakeup_fd_comes_back() -> None:
    with signal_wakeup() as wakeup:
        assert wakeup is not None
    assert signal.set_wakeup_fd(-1) == -1


def test_off_the_main_thread_there_is_no_wakeup_and_waits_still_work(
        udp: tuple[socket.socket, socket.socket]) -> None:
    receiver, sender = udp
    outcome: list[object] = []

    def work() -> None:
        with signal_wakeup() as wakeup:
            sender.sendto(b"x", receiver.getsockname())
            outcome.extend([wakeup, wait_readable(receiver, WAIT, wakeup)])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(WAIT)
    assert outcome == [None, True]
