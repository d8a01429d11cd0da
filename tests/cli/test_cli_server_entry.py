"""`python -m rendezvous.server`, the entry the labs use, takes `--max-members` as `ptunnel
rendezvous` does: a network at its cap gets the refusal in one line."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.cli import ENV, Background, join, ptunnel
from tests.support.loopback import free_port, free_udp_pair


@contextmanager
def lab_server(tmp_path: Path, *flags: str) -> Iterator[str]:
    address = f"127.0.0.1:{free_udp_pair()}"
    proc = subprocess.Popen([sys.executable, "-m", "rendezvous.server", "--listen", address,
                             "--db", str(tmp_path / "r" / "r.db"), *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening" in line:
                break
        # Keep reading its log, or a full pipe would one day block the server.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield address
    finally:
        proc.kill()
        proc.wait()


def test_max_members_caps_a_network(tmp_path: Path) -> None:
    with lab_server(tmp_path, "--max-members", "1") as address:
        home = tmp_path / "home"
        assert ptunnel("init", "--rendezvous", address, "--home", str(home)).returncode == 0
        laptop = join(home, tmp_path / "laptop")
        first = Background("expose", str(free_port()), "--as", "one", "--home", str(home))
        try:
            first.wait_for("exposing")
            done = ptunnel("expose", str(free_port()), "--as", "two", "--home", str(laptop))
        finally:
            first.kill()
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "ptunnel expose: error: the rendezvous refused 'two': this network already has 1 nodes "
        "registered, the most this rendezvous allows; stop one, or ask its operator to raise "
        "max_members")


def test_max_members_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "rendezvous.server", "--max-members", "511",
                           "--db", str(tmp_path / "r.db")],
                          capture_output=True, text=True, timeout=30, env=ENV)
    assert done.returncode == 2
    assert "argument --max-members: '511' is not a member cap; use 1-510" in done.stderr
