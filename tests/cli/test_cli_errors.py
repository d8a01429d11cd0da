"""The errors users hit with expose/connect: one line on stderr, what to do, non-zero exit: 2 for
a mistake to fix first (a flag, the set-up), 1 for a failure of the run (the README's table)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.loopback import free_udp_pair

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
ENV.pop("PTUNNEL_RENDEZVOUS", None)


def ptunnel(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunnel", *argv], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str,
                          code: int = 2) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def joined(tmp_path: Path, name: str) -> str:
    home = tmp_path / name
    assert ptunnel("init", "--home", str(home)).returncode == 0
    return str(home)


def test_not_joined(tmp_path: Path) -> None:
    done = ptunnel("connect", "ssh-home", "-L", "2222", "--home", str(tmp_path / "new"),
                   "--rendezvous", "127.0.0.1:9")
    assert_one_line_error(done, "not joined to a network", "ptunnel join CODE")


def test_no_rendezvous_configured(tmp_path: Path) -> None:
    done = ptunnel("expose", "22", "--as", "ssh-home", "--home", joined(tmp_path, "a"))
    assert_one_line_error(done, "no rendezvous server given", "PTUNNEL_RENDEZVOUS")


def test_unknown_name(tmp_path: Path, rendezvous: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = ptunnel("connect", "ssh-home", "-L", str(port), "--home", joined(tmp_path, "a"),
                   "--rendezvous", rendezvous)
    assert_one_line_error(done, "no node named 'ssh-home' in your network",
                          "is `ptunnel expose` running there?", code=1)


def test_local_port_in_use(tmp_path: Path, rendezvous: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = ptunnel("connect", "ssh-home", "-L", str(port), "--home",
                       joined(tmp_path, "a"), "--rendezvous", rendezvous)
    assert_one_line_error(done, f"local port 127.0.0.1:{port} is already in use",
                          "pick another with -L PORT", code=1)


def test_rendezvous_not_answering(tmp_path: Path) -> None:
    silent = free_udp_pair()  # nothing listens there
    done = ptunnel("expose", "22", "--as", "ssh-home", "--home", joined(tmp_path, "a"),
                   "--rendezvous", f"127.0.0.1:{silent}", timeout=90)
    assert_one_line_error(done, "no answer from the rendezvous", "is `ptunnel rendezvous`",
                          code=1)


def test_bad_arguments(tmp_path: Path) -> None:
    done = ptunnel("expose", "99999", "--as", "x", "--home", joined(tmp_path, "a"))
    assert_one_line_error(done, "--help")
    done = ptunnel("connect", "x", "-L", "2222", "--rendezvous", "nowhere", "--home",
                   joined(tmp_path, "b"))
    assert_one_line_error(done, "HOST:PORT")
