"""A network namespace of the benchmark's own, with its loopback at a chosen MTU.

The headline table runs every path on a loopback of MTU 1,500, the size internet paths carry:
on the default loopback (MTU 65,536) ptunnel's path-MTU discovery grows its datagrams to 65,000
bytes, which spreads its per-datagram cost over 44 times the bytes and flatters it against
peers whose packet size does not follow the MTU. Each table runs inside a fresh namespace
(`ip netns add`; only a loopback, nothing reaches out), so every path of a table sees the same
MTU and nothing else on the machine shares it. Needs root; the namespace is deleted in `finally`.

    with loopback_namespace(1500) as ns:   # "ptbench-<pid>-1500"
        subprocess.run(["ip", "netns", "exec", ns, ...])
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from bench.procs import Unavailable

LOOPBACK_DEFAULT_MTU = 65536


def namespace_name(mtu: int) -> str:
    """Per run (the pid) and per table, so runs and a leftover namespace never collide."""
    return f"ptbench-{os.getpid()}-{mtu}"


def setup_commands(name: str, mtu: int) -> list[list[str]]:
    return [
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "set", "lo", "mtu", str(mtu), "up"],
    ]


def why_unavailable() -> str | None:
    """Why no namespace can be made here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


@contextmanager
def loopback_namespace(mtu: int) -> Iterator[str]:
    reason = why_unavailable()
    if reason is not None:
        raise Unavailable(reason)
    name = namespace_name(mtu)
    try:
        for argv in setup_commands(name, mtu):
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
            if done.returncode != 0:
                raise Unavailable(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=10)
