"""Addresses: the one `Addr` type, `HOST:PORT` text, and the pseudo addresses of paths (sans-IO).

The sans-IO machines treat an address as an opaque, hashable value. Two kinds of *pseudo address*
stand in for real ones so that a path through something other than the node's main socket is
still just an address to them; only the node's send routine resolves them:

| pseudo address             | means                                                           |
|----------------------------|-----------------------------------------------------------------|
| `("relay:<peer hex>", 0)`  | through the rendezvous's relay, to that peer (`relay_addr`)     |
| `("<ip>\\|<i>", port)`      | out of extra socket `i` of a port prediction (`via_socket`)     |

Port 0 is never a real UDP source port, which keeps `is_relay` cheap on the hot path.
"""

from __future__ import annotations

from typing import Final

Addr = tuple[str, int]

RELAY_HOST: Final = "relay"
SOCKET_SEPARATOR: Final = "|"


def parse_endpoint(text: str, default_host: str | None = None) -> Addr:
    """Parse ``HOST:PORT`` (or ``PORT`` when a default host is given; ``[v6]:PORT`` too)."""
    text = text.strip()
    host: str | None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = default_host, text
    if not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} has no valid port (1-65535)")
    return host, int(port_text)


def parse_endpoints(text: str) -> list[Addr]:
    """``HOST:PORT,HOST:PORT``: a deployment's servers, first one first (duplicates dropped).
    Raises ValueError naming the entry that is not ``HOST:PORT``."""
    out: list[Addr] = []
    for part in text.split(","):
        if not part.strip():
            raise ValueError(f"{text!r} has an empty entry; write HOST:PORT,HOST:PORT")
        addr = parse_endpoint(part)
        if addr not in out:
            out.append(addr)
    return out


def format_endpoint(addr: Addr) -> str:
    """`10.0.1.2:43540`, `[::1]:7000`: an address as people write it (never a Python repr)."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def relay_addr(peer: bytes) -> Addr:
    """The pseudo address of "through the rendezvous, to `peer`" (one per peer)."""
    return (f"{RELAY_HOST}:{peer.hex()}", 0)


def relay_peer(addr: Addr) -> bytes:
    """The peer a relay pseudo address stands for."""
    return bytes.fromhex(addr[0][len(RELAY_HOST) + 1 :])


def is_relay(addr: Addr) -> bool:
    # Port 0 is never a real source port: test it first, the string only for pseudo addresses.
    return addr[1] == 0 and addr[0].startswith(RELAY_HOST + ":")


def via_socket(index: int, addr: Addr) -> Addr:
    """The pseudo address of `addr` reached through extra socket `index` (port prediction)."""
    return (f"{addr[0]}{SOCKET_SEPARATOR}{index}", addr[1])
