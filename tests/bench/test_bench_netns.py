"""The benchmark's own namespace: its name and the commands that give its loopback an MTU."""

from __future__ import annotations

import os

from bench.netns import namespace_name, setup_commands


def test_each_table_of_each_run_has_its_own_namespace() -> None:
    assert namespace_name(1500) == f"ptbench-{os.getpid()}-1500"
    assert namespace_name(1500) != namespace_name(65536)


def test_the_loopback_gets_the_mtu_and_comes_up() -> None:
    assert setup_commands("ptbench-1-1500", 1500) == [
        ["ip", "netns", "add", "ptbench-1-1500"],
        ["ip", "-n", "ptbench-1-1500", "link", "set", "lo", "mtu", "1500", "up"],
    ]
