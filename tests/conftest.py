"""Shared pytest fixtures."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import settings

from lab.netns import Lab, reap_stale_labs, require_netns
from tests.support.loopback import free_udp_pair

# Hypothesis' deadline per example (200 ms) times the machine, not the code: a loaded CI machine,
# or the virtual-time tests at the lowest priority beside the NAT lab (tests/suites.py), would fail
# a correct test. Tests assert behaviour; bench/ measures time.
settings.register_profile("ptunnel", deadline=None)
settings.load_profile("ptunnel")


# --- logging --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A command run in-process sets up logging for the whole process (`setup_logging`: root
    handlers and levels, e.g. `-q` raising the root level to error; the fuzz runner's
    `logging.disable`); undo it after each test, so a later test's `caplog` sees its records
    whatever ran before it."""
    root, packets = logging.getLogger(), logging.getLogger("ptunnel.packets")
    saved = (root.level, root.handlers[:], packets.level, logging.root.manager.disable)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    packets.setLevel(saved[2])
    logging.disable(saved[3])  # the fuzz runner silences every logger while it runs


# --- NAT lab (tests/natlab.py) ----------------------------------------------------------------
LabFactory = Callable[[Sequence[str]], Lab]


@pytest.fixture
def natlab() -> Iterator[LabFactory]:
    """Build labs with `natlab(["cone", "symmetric"])`; all are torn down after the test.

    Skips without root or `ip netns`, unless PTUNNEL_REQUIRE_NETNS=1 (CI): then it fails.
    """
    require_netns()
    reap_stale_labs()
    labs: list[Lab] = []

    def make(kinds: Sequence[str]) -> Lab:
        lab = Lab(kinds, prefix=f"ptl{os.getpid()}x{len(labs)}")
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            sys.stdout.write(lab.transcript() + "\n")  # pytest shows it only for failures
            lab.close()


ROOT = Path(__file__).resolve().parent.parent


# --- a rendezvous server process on loopback ----------------------------------------------
@pytest.fixture
def rendezvous(tmp_path: Path) -> Iterator[str]:
    """`ptunnel rendezvous` on a free loopback port, as a process; yields HOST:PORT."""
    port = free_udp_pair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunnel", "rendezvous", "--listen", f"127.0.0.1:{port}", "--db",
         str(tmp_path / "r.db"), "--home", str(tmp_path / "r")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "listening" not in proc.stderr.readline():
        pass
    # Keep reading its log, or a full pipe would one day block the server.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
