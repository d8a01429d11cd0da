"""Run `ptunnel` the way a user does: `python -m tunnel ...` in a subprocess, with this checkout
on PYTHONPATH and no PTUNNEL_RENDEZVOUS from the environment.

`Background` runs a long-lived command, collects its output lines as they come (so a test waits
for a line instead of sleeping), and `stop(signal)` measures how long the command takes to exit.
`SilentRendezvous` is a UDP port where nothing ever answers, which tells when the first
datagram arrives (the command is then waiting for the rendezvous).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("PTUNNEL_RENDEZVOUS", None)
ENV.pop("PTUNNEL_HOME", None)


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tunnel", *argv]


def ptunnel(*argv: str, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*argv), capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})})


def init(home: Path) -> Path:
    done = ptunnel("init", "--home", str(home))
    assert done.returncode == 0, done.stderr
    return home


def join(member: Path, home: Path) -> Path:
    """A second node of `member`'s network."""
    code = ptunnel("invite", "--home", str(member)).stdout.strip()
    done = ptunnel("join", code, "--home", str(home))
    assert done.returncode == 0, done.stderr
    return home


@dataclass(frozen=True, slots=True)
class Stopped:
    code: int
    seconds: float  # from the signal to the exit
    stdout: list[str]
    stderr: list[str]


class Background:
    """A running `ptunnel` command whose stdout and stderr lines are collected as they come."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None,
                 nohup: bool = False) -> None:
        # SIGHUP as a terminal would leave it, or ignored as `nohup` does; never what the test
        # runner happened to inherit.
        hangup = signal.SIG_IGN if nohup else signal.SIG_DFL
        self.proc = subprocess.Popen(command(*argv), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**ENV, **(env or {})},
                                     preexec_fn=lambda: signal.signal(signal.SIGHUP, hangup))
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [self._collect(self.proc.stdout, self.stdout),
                         self._collect(self.proc.stderr, self.stderr)]

    @staticmethod
    def _collect(stream: IO[str] | None, lines: list[str]) -> threading.Thread:
        assert stream is not None

        def read() -> None:
            for line in stream:
                lines.append(line)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def wait_for(self, text: str, timeout: float = 20) -> str:
        """The first output line (stdout or stderr) containing `text`."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:
                for reader in self._readers:
                    reader.join(timeout=5)
            for line in [*self.stdout, *self.stderr]:
                if text in line:
                    return line
            if exited or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from {self.proc.args!r}: "
                                     f"{''.join(self.stdout + self.stderr)}")
            time.sleep(0.01)

    def stop(self, signum: int = signal.SIGINT, timeout: float = 10) -> Stopped:
        start = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        seconds = time.monotonic() - start
        for reader in self._readers:
            reader.join(timeout=5)
        return Stopped(code, seconds, [line.rstrip("\n") for line in self.stdout],
                       [line.rstrip("\n") for line in self.stderr])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running(*argv: str, nohup: bool = False) -> Iterator[Background]:
    command_ = Background(*argv, nohup=nohup)
    try:
        yield command_
    finally:
        command_.kill()


class SilentRendezvous:
    """A bound UDP socket on 127.0.0.1 that reads what arrives and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def wait_for_datagram(self, timeout: float = 10) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def received_nothing(self) -> bool:
        self.sock.settimeout(0)
        try:
            self.sock.recv(65536)
        except BlockingIOError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@contextmanager
def silent_rendezvous() -> Iterator[SilentRendezvous]:
    server = SilentRendezvous()
    try:
        yield server
    finally:
        server.close()


def status(home: Path) -> dict[str, Any]:
    """The one running instance's status, as `ptunnel status --json` prints it."""
    done = ptunnel("status", "--json", "--home", str(home))
    assert done.returncode == 0, done.stderr
    (instance,) = json.loads(done.stdout)
    assert isinstance(instance, dict)
    return instance
