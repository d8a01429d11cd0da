"""Stopping: SIGINT, SIGTERM or SIGHUP ends a command within 1 s at every stage, with one line of
output and exit status 130, 143 or 129 (SIGHUP is ignored under `nohup`); a rendezvous that never
answers is reported within about 5 s."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import (
    ENV,
    Background,
    Stopped,
    command,
    init,
    join,
    running,
    silent_rendezvous,
)
from tests.support.loopback import free_port, free_udp_pair

STOP_WITHIN = 1.0  # s; the README's promise
SIGNALS = [pytest.param(signal.SIGINT, id="INT"), pytest.param(signal.SIGTERM, id="TERM"),
           pytest.param(signal.SIGHUP, id="HUP")]


def stop_line(prog: str, signum: int) -> str:
    said = "interrupted" if signum == signal.SIGINT else f"stopped ({signal.Signals(signum).name})"
    return f"ptunnel {prog}: {said}"


def stop_and_check(command: Background, prog: str, signum: int) -> Stopped:
    """Signal the command; it must exit in time, saying one line and nothing else after it."""
    before = len(command.stdout), len(command.stderr)
    stopped = command.stop(signum)
    assert stopped.code == 128 + signum, stopped
    assert stopped.seconds < STOP_WITHIN, stopped
    assert stopped.stdout[before[0]:] == [], stopped
    # Log lines written before the signal may still be in the pipe; the stop line is the one
    # line the stop itself prints, and nothing follows it.
    after = stopped.stderr[before[1]:]
    assert after and after[-1] == stop_line(prog, signum), stopped
    assert after.count(stop_line(prog, signum)) == 1, stopped
    assert not any("Traceback" in line for line in stopped.stderr)
    return stopped


def connect_argv(home: Path, rendezvous: str) -> list[str]:
    return ["connect", "web", "-L", str(free_port()), "--home", str(home),
            "--rendezvous", rendezvous]


def expose_argv(home: Path, rendezvous: str) -> list[str]:
    return ["expose", "8080", "--as", "web", "--home", str(home), "--rendezvous", rendezvous]


def ping_argv(home: Path, rendezvous: str) -> list[str]:
    return ["ping", "web", "--home", str(home), "--rendezvous", rendezvous]


def up_argv(home: Path, rendezvous: str) -> list[str]:
    (home / "node.yaml").write_text(f"rendezvous: {rendezvous}\n"
                                    "expose:\n  - port: 8080\n    as: web\n"
                                    f"connect:\n  - name: db\n    listen: {free_port()}\n")
    return ["up", "--home", str(home)]


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("argv", [connect_argv, expose_argv, ping_argv, up_argv],
                         ids=["connect", "expose", "ping", "up"])
def test_stop_while_waiting_for_the_rendezvous(
        tmp_path: Path, argv: Callable[[Path, str], list[str]], signum: int) -> None:
    home = init(tmp_path / "a")
    with silent_rendezvous() as server:
        args = argv(home, server.address)
        with running(*args) as command:
            server.wait_for_datagram()  # it has started and waits for an answer
            stop_and_check(command, args[0], signum)


def test_under_nohup_a_hangup_is_ignored(tmp_path: Path) -> None:
    """`nohup ptunnel connect ... &` outlives its terminal: SIGHUP changes nothing, and SIGTERM
    still stops it cleanly."""
    home = init(tmp_path / "a")
    with silent_rendezvous() as server:
        args = connect_argv(home, server.address)
        with running(*args, nohup=True) as command:
            server.wait_for_datagram()
            command.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)  # SIGHUP's default action ends a process at once
            assert command.proc.poll() is None, command.stderr
            stop_and_check(command, "connect", signal.SIGTERM)


def test_closing_its_terminal_stops_a_command_cleanly(tmp_path: Path) -> None:
    """The terminal window closes: the kernel sends SIGHUP and every write to the terminal fails
    from then on (EIO). The stop line has nowhere to go, but the stop is still clean: SIGHUP's
    status, not the 1 of an error writing it (or 120, Python's failed flush at exit)."""
    home = init(tmp_path / "a")
    with silent_rendezvous() as server:
        pid, terminal = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal, stdin to stderr
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            os.execve(sys.executable, command(*connect_argv(home, server.address)), ENV)
        try:
            server.wait_for_datagram()  # it runs and waits for the rendezvous
            os.close(terminal)
            deadline = time.monotonic() + STOP_WITHIN
            while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ended[0] == pid, f"still running {STOP_WITHIN} s after its terminal closed"
            assert os.waitstatus_to_exitcode(ended[1]) == 128 + signal.SIGHUP
        finally:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("prog", ["netcheck", "list"])
def test_stop_a_one_shot_query(tmp_path: Path, prog: str, signum: int) -> None:
    home = init(tmp_path / "a")
    with silent_rendezvous() as server, running(prog, "--timeout", "30", "--home", str(home),
                                                "--rendezvous", server.address) as command:
        server.wait_for_datagram()
        stop_and_check(command, prog, signum)


def test_connect_reports_a_silent_rendezvous_within_6_s(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    with silent_rendezvous() as server, running(*connect_argv(home, server.address)) as command:
        server.wait_for_datagram()
        start = time.monotonic()
        code = command.proc.wait(timeout=10)
        elapsed = time.monotonic() - start
        line = command.wait_for("error:")
    assert code == 1  # a failure of the run, not a usage mistake
    assert elapsed < 6.0, elapsed
    assert f"no answer from the rendezvous at {server.address}" in line
    assert "is `ptunnel rendezvous` running there and is UDP allowed?" in line


def test_stop_the_rendezvous_server(tmp_path: Path) -> None:
    port = free_udp_pair()
    with running("rendezvous", "--listen", f"127.0.0.1:{port}", "--home",
                 str(tmp_path / "r")) as server:
        server.wait_for("listening")
        stop_and_check(server, "rendezvous", signal.SIGTERM)


def echo_server() -> int:
    """A TCP echo service on 127.0.0.1, in threads of this process; returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def test_stop_while_transferring_and_serving(tmp_path: Path, rendezvous: str) -> None:
    """`up` exposes (the name from YAML in capitals), `connect` carries a transfer: SIGINT stops
    the connect in mid-transfer, then SIGTERM the daemon, each within 1 s."""
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    (home / "node.yaml").write_text(f"rendezvous: {rendezvous}\n"
                                    f"expose:\n  - port: {echo_server()}\n    as: Echo-D\n")
    local = free_port()
    with running("up", "--home", str(home)) as daemon:
        assert "as 'echo-d'" in daemon.wait_for("exposing")
        with running("connect", "ECHO-d", "-L", str(local), "--home", str(laptop),
                     "--rendezvous", rendezvous) as connect:
            assert "echo-d on 127.0.0.1:" in connect.wait_for("ready:")
            client = socket.create_connection(("127.0.0.1", local), timeout=10)
            received = 0

            def pump() -> None:
                try:
                    while True:
                        client.sendall(b"x" * 65536)
                except OSError:
                    pass

            threading.Thread(target=pump, daemon=True).start()
            while received < 1_000_000:  # data is flowing both ways through the tunnel
                received += len(client.recv(65536))
            stop_and_check(connect, "connect", signal.SIGINT)
            client.close()
        stop_and_check(daemon, "up", signal.SIGTERM)


def test_stop_while_punching(tmp_path: Path, rendezvous: str) -> None:
    """The exposing node is frozen: the rendezvous introduces it, but no handshake answers."""
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    with running(*expose_argv(home, rendezvous)) as exposer:
        exposer.wait_for("exposing")
        exposer.proc.send_signal(signal.SIGSTOP)
        try:
            with running(*connect_argv(laptop, rendezvous)) as connect:
                connect.wait_for("introduced to web")
                stop_and_check(connect, "connect", signal.SIGTERM)
        finally:
            exposer.proc.send_signal(signal.SIGCONT)
