"""A laptop that sleeps, with two real `ptunnel up` daemons on loopback: the connecting one does
not run for 45 s (SIGSTOP, which is what a suspend looks like to the process: the node's clock,
CLOCK_BOOTTIME, jumps on waking, and what home sent meanwhile waits in its socket). Home gives
the channel up after 30 s of silence. On waking, a connection made at once must go through, and
one held open across the sleep must be reset at once rather than hang.

Before, the first connection after waking hung for 30 s and was then reset: the loop handed the
woken node its backlog and the new connection before its overdue timers, and both sides then
replaced their dead channels at the same moment, each dropping the other's packets
(`tests/node/test_peer_wake.py` has every order of that on virtual time)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.cli.test_cli_up import (
    echo_once,
    echo_services,
    home_and_laptop,
    up_daemons,
    wait_for_line,
)
from tests.support.loopback import free_port
from tunnel.channel.constants import IDLE_TIMEOUT

ASLEEP = IDLE_TIMEOUT + 15  # s; home gives the channel up meanwhile
AT_ONCE = 5.0  # s; what "at once" allows on a busy machine (it takes well under one)


def test_after_a_sleep_a_new_connection_goes_through_and_a_held_one_is_reset(
        tmp_path: Path, rendezvous: str) -> None:
    home, laptop = home_and_laptop(tmp_path)
    service, local = free_port(), free_port()
    echoes = echo_services(service)
    head = f"rendezvous: {rendezvous}\n"
    (home / "node.yaml").write_text(f"{head}expose:\n  - port: {service}\n    as: web\n")
    (laptop / "node.yaml").write_text(f"{head}connect:\n  - name: web\n    listen: {local}\n")
    daemons = up_daemons(home, laptop)
    held = None
    try:
        wait_for_line(daemons[0], "exposing")
        wait_for_line(daemons[1], "ready:")
        held = socket.create_connection(("127.0.0.1", local), timeout=10)
        held.sendall(b"before the sleep")
        assert held.recv(100) == b"before the sleep"
        time.sleep(3)

        daemons[1].send_signal(signal.SIGSTOP)
        time.sleep(ASLEEP)
        # A connection made just before waking (ssh typed as the lid opens) waits in the
        # listener's backlog: the woken node gets it in the same turn as its sockets' backlog,
        # before its overdue timers.
        early = socket.create_connection(("127.0.0.1", local), timeout=AT_ONCE)
        early.sendall(b"ssh as the lid opens")
        early.shutdown(socket.SHUT_WR)
        daemons[1].send_signal(signal.SIGCONT)
        woke = time.monotonic()
        with early:
            assert early.recv(100) == b"ssh as the lid opens"
        took = time.monotonic() - woke
        print(f"a connection made on waking went through {took:.2f} s after")  # noqa: T201
        assert took <= AT_ONCE
        assert echo_once(local, b"and the next one") == b"and the next one"

        # Home reset its end of the held connection when it gave the channel up; the laptop's
        # end learns it on waking, not when the user gives up on a frozen ssh session.
        held.settimeout(AT_ONCE)
        try:
            held.sendall(b"still there?")
            reply = held.recv(100)
        except ConnectionResetError:
            reply = b"reset"
        assert reply in (b"reset", b""), reply
    finally:
        if held is not None:
            held.close()
        for daemon in daemons:
            daemon.send_signal(signal.SIGCONT)
            daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            daemon.wait(timeout=15)
        for echo in echoes:
            echo.terminate()
