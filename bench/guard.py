"""The loopback-bootstrap guard for the hyperdht peer.

hyperdht's default bootstrap list is Holepunch's public DHT nodes. The benchmark must never talk to
them: it runs its own testnet on 127.0.0.1 and passes that list explicitly. This module parses a
bootstrap list and refuses it unless every node is an IPv4 or IPv6 loopback literal (host names are
refused too: a name could resolve anywhere). The Node script checks the same rule again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


class NonLoopbackBootstrap(ValueError):
    """A bootstrap node is not on loopback (or is not a HOST:PORT literal at all)."""


@dataclass(frozen=True, slots=True)
class BootstrapNode:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_bootstrap_node(text: str) -> BootstrapNode:
    """Parse "127.0.0.1:PORT" (or "[::1]:PORT"); NonLoopbackBootstrap unless it is on loopback."""
    item = text.strip()
    host, sep, port_text = item.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise NonLoopbackBootstrap(f"bootstrap node {item!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise NonLoopbackBootstrap(f"bootstrap node {item!r}: not an IP literal") from exc
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise NonLoopbackBootstrap(f"bootstrap node {item!r}: port out of range")
    if not address.is_loopback:
        raise NonLoopbackBootstrap(f"refusing bootstrap node {item!r}: not on loopback")
    return BootstrapNode(host, port)


def require_loopback_bootstrap(nodes: Iterable[str]) -> list[BootstrapNode]:
    """Every node parsed and checked; an empty list is refused (hyperdht would use public nodes)."""
    parsed = [parse_bootstrap_node(node) for node in nodes]
    if not parsed:
        raise NonLoopbackBootstrap("empty bootstrap list: hyperdht would fall back to public nodes")
    return parsed
