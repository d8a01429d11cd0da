"""Which announced addresses a node may probe: the candidate policy against aiming (sans-IO).

A member of a network chooses the LAN candidates it registers, and the rendezvous hands them to
every node it introduces that member to; a compromised rendezvous can hand out anything. Whatever
a node probes because of an introduction is therefore aimed by someone else, so only addresses
that can belong to the peer's own network are accepted (issue 12, "No aiming"):

| candidate | accepted                                                                       |
|-----------|--------------------------------------------------------------------------------|
| LAN       | RFC 1918 (10/8, 172.16/12, 192.168/16), link-local (169.254/16, fe80::/10),    |
|           | shared CGNAT space (100.64/10, RFC 6598), ULA (fc00::/7); loopback only in a   |
|           | loopback network (below)                                                       |
| public    | any unicast address with a real port: not unspecified, multicast or reserved   |
|           | (240/4, with the broadcast address); loopback only in a loopback network       |

At most `MAX_CANDIDATES` per introduction: the public endpoint first, then the LAN candidates in
the order announced. Everything else is dropped and logged at DEBUG once per address.

Why 100.64/10: like RFC 1918 it is never routed on the Internet (RFC 6598), so a probe aimed
there reaches at most a host of the same provider network, no more than a 10/8 probe does; and
some nodes have nothing else (a host on a carrier's or a cloud's shared address space, an
interface of an overlay network), where two nodes of one such network may reach each other.

Why loopback only in a loopback network: a loopback candidate makes the node probe its own host
(its DNS resolver on 127.0.0.53:53, any local service), which no remote peer can be. It is
accepted when the node's rendezvous itself is on loopback: then every member runs on this host
(the test suite, `make demo`), and 127.0.0.1 is the only address they share.

The same rule filters what a node announces of itself (`announceable`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from tunnel.addresses import Addr, format_endpoint

log = logging.getLogger(__name__)

# Implementation limits.
MAX_CANDIDATES: Final = 8  # public endpoint + LAN candidates kept per introduction (issue 12)
MAX_LOGGED: Final = 256  # rejected addresses remembered so each is logged once (bounded memory)

_LAN_NETWORKS: Final = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
        "169.254.0.0/16", "fe80::/10",  # link-local
        "100.64.0.0/10",  # RFC 6598 shared address space (CGNAT)
        "fc00::/7",  # RFC 4193 unique local addresses
    )
)
_LOOPBACK: Final = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(host: str) -> IpAddress | None:
    """The address of `host`, unwrapping IPv4-mapped IPv6; None for anything that is not one."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback_host(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_loopback


@dataclass
class CandidatePolicy:
    """The rule above for one node. `allow_loopback`: the node's rendezvous is on loopback
    (use `for_rendezvous`)."""

    allow_loopback: bool = False
    _logged: set[Addr] = field(default_factory=set)

    @classmethod
    def for_rendezvous(cls, rendezvous: Addr) -> CandidatePolicy:
        return cls(allow_loopback=is_loopback_host(rendezvous[0]))

    def lan_allowed(self, addr: Addr) -> bool:
        ip = _ip(addr[0])
        if ip is None or not 0 < addr[1] < 65536:
            return False
        if any(ip in net for net in _LOOPBACK):
            return self.allow_loopback
        return any(ip in net for net in _LAN_NETWORKS)

    def public_allowed(self, addr: Addr) -> bool:
        ip = _ip(addr[0])
        if ip is None or not 0 < addr[1] < 65536:
            return False
        if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
            return False
        return self.allow_loopback or not ip.is_loopback

    def introduced(self, public: Addr, lan: Iterable[Addr]) -> tuple[Addr | None, list[Addr]]:
        """The candidates of one introduction that may be probed: the public endpoint (None if
        refused) and at most `MAX_CANDIDATES` in all."""
        kept_public = public if self.public_allowed(public) else None
        if kept_public is None:
            self._reject(public, "not a unicast address a peer can have")
        # A LAN candidate may be the public endpoint itself (a rendezvous on the same LAN or
        # host): it is kept, as LAN, and takes no second place.
        room = MAX_CANDIDATES - (kept_public is not None)
        kept: list[Addr] = []
        for addr in lan:
            if addr in kept:
                continue
            if not self.lan_allowed(addr):
                self._reject(addr, "not a private, link-local, CGNAT or ULA address")
            elif addr == kept_public:
                kept.append(addr)
                room += 1
            elif len(kept) >= room:
                self._reject(addr, f"more than {MAX_CANDIDATES} candidates")
            else:
                kept.append(addr)
        return kept_public, kept

    def announceable(self, lan: Iterable[Addr]) -> list[Addr]:
        """This node's own LAN addresses that peers would accept, at most `MAX_CANDIDATES` - 1
        (its public endpoint takes one place)."""
        kept: list[Addr] = []
        for addr in lan:
            if not self.lan_allowed(addr):
                self._reject(addr, "not announced: not a private, link-local, CGNAT or ULA address")
            elif len(kept) < MAX_CANDIDATES - 1 and addr not in kept:
                kept.append(addr)
        return kept

    def _reject(self, addr: Addr, why: str) -> None:
        if addr in self._logged or len(self._logged) >= MAX_LOGGED:
            return
        self._logged.add(addr)
        log.debug("candidate %s dropped: %s", format_endpoint(addr), why)
