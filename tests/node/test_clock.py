"""The node's clock counts the time a machine was asleep (CLOCK_BOOTTIME), as WireGuard's timers
do, so that a laptop that wakes knows how old its channels and keys are
(`tests/cli/test_cli_sleep.py` shows what the node does with that).

A machine cannot be suspended in a test, but a time namespace can start a process whose boot-time
clock is ahead of its monotonic clock by an hour, as on a laptop that slept for an hour since
it booted: the node's clock must read the first."""

from __future__ import annotations

import subprocess
import sys

from lab.netns import require_netns
from tests.cli.test_cli_up import ENV
from tests.support.privileges import root_with

ASLEEP = 3600  # s the namespace's boot-time clock runs ahead


can_unshare_time = root_with("unshare", "a time namespace needs root")


def test_the_nodes_clock_counts_the_time_asleep() -> None:
    require_netns(probe=can_unshare_time)
    read = ("import time; from tunnel.node.udp import monotonic; "
            "print(monotonic() - time.monotonic())")
    out = subprocess.run(["unshare", "--time", "--boottime", str(ASLEEP), sys.executable, "-c",
                          read], capture_output=True, text=True, env=ENV, timeout=30, check=True)
    assert abs(float(out.stdout) - ASLEEP) < 1.0, out
