"""What every path adapter provides, and the helpers they share.

An adapter is started once per suite run and kept up across the alternating rounds:
`start(target)` returns a local TCP port that reaches the sink/echo server, `stop()` ends every
process it started, `processes()` names them for CPU and memory accounting. Adapters whose client
can be launched afresh also implement `cold_start()` (launch to first byte through the tunnel).
Anything missing on this machine raises `Unavailable("reason")`, which the suite shows as a row.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bench.procs import Child, Unavailable

__all__ = ["LOOPBACK", "Adapter", "ColdStartable", "Placement", "Target", "Unavailable",
           "free_port", "free_rendezvous_port", "in_ns", "need_tool"]

READY_TIMEOUT_S = 20.0  # how long a tunnel may take to come up before the path is skipped


@dataclass(frozen=True, slots=True)
class Target:
    """Where the sink/echo server listens."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a two-ended path runs: network namespaces (None: ours) and how the client side
    reaches the server side. The NAT lab places the ends in namespaces on either side of a lossy
    router; everything else runs both ends on our own loopback."""

    client_ns: str | None = None
    server_ns: str | None = None
    server_host: str = "127.0.0.1"


LOOPBACK = Placement()


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside network namespace `ns` (`ip netns exec` keeps the pid: /proc works)."""
    return argv if ns is None else ["ip", "netns", "exec", ns, *argv]


@runtime_checkable
class Adapter(Protocol):
    name: str
    description: str

    def start(self, target: Target) -> int: ...

    def stop(self) -> None: ...

    def processes(self) -> dict[str, Child]: ...


@runtime_checkable
class ColdStartable(Protocol):
    def cold_start(self, timeout: float) -> float | None:
        """Seconds from launching a fresh client to the first byte echoed through it."""
        ...


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A TCP (or `kind`) port free on 127.0.0.1 right now (the OS picks; a small race is
    acceptable here)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_rendezvous_port() -> int:
    """A port P free on 127.0.0.1 for TCP and UDP, with P + 1 free for UDP: a rendezvous'
    main port and its netcheck port."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as netcheck:
                netcheck.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise Unavailable("no free port pair for a rendezvous server")


def cold_start_of(label: str, argv_for_port: Callable[[int], list[str]],
                  timeout: float, env: Mapping[str, str] | None = None) -> float | None:
    """Launch a fresh client listening on a free port; seconds to the first byte echoed
    through it (None if none within `timeout`)."""
    from bench.load import first_byte_since

    port = free_port()
    started = time.perf_counter()
    child = Child(label, argv_for_port(port), env=env)
    try:
        return first_byte_since(port, started, timeout)
    finally:
        child.stop()


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"`{name}` is not installed")
    return path


class ChildrenMixin:
    """Keeps the started children and stops them in reverse order."""

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}

    def spawn(self, role: str, child: Child) -> Child:
        self.children[role] = child
        return child

    def processes(self) -> dict[str, Child]:
        return dict(self.children)

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop()
        self.children.clear()
