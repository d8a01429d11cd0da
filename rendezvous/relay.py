"""Relay policy (pure): which opaque datagrams the rendezvous forwards, and to whom.

Relaying is the fallback when two nodes cannot punch a direct path. The datagrams stay
end-to-end encrypted by the nodes' Noise session; the server only rewrites the envelope:

    node A -> server: [0x40 RELAY_TO][B's static 32][datagram]
    server -> node B: [0x41 RELAY_FROM][A's static 32][datagram]   (same size: no amplification)

A datagram is forwarded only when (1) its source address is the registered endpoint of a live
member A, (2) the destination B is a live member of the same network, (3) the server introduced
A and B (CONNECT) and (4) A is within its byte rate. Anything else is dropped and counted.

Checks (1)-(3) cost three store queries (~80 µs on SQLite), so a granted route is cached for
`ROUTE_CACHE_TTL`: the store stays the source of truth, and a revoked permission (a member left
or moved) stops being honoured at most that much later.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rendezvous.protocol import Endpoint, decode_relay_to, encode_relay_from
from rendezvous.ratelimit import RELAY_BURST, RELAY_RATE, RateLimiter, SourceRateLimiter
from rendezvous.store import Store

# Before the lookup of the sender: per source IP, packets. A relayed bulk transfer at
# `RELAY_RATE` in 1200-byte datagrams is ~10,400 packets/s, so 20,000/s leaves room.
RELAY_SOURCE_RATE = 20_000.0  # packets per second
RELAY_SOURCE_BURST = 40_000.0  # packets
ROUTE_CACHE_TTL = 1.0  # seconds; how stale a relay permission may be
ROUTE_CACHE_MAX = 16_384  # routes; cleared wholesale when full (a flood cannot pin memory)


@dataclass(frozen=True, slots=True)
class _Route:
    network: bytes
    src_static: bytes
    dest: Endpoint
    until: float


class RelayPolicy:
    def __init__(self, store: Store, enabled: bool = True, rate: float = RELAY_RATE,
                 hash_key: bytes = b"") -> None:
        """`rate`: relayed bytes per second per node; the burst is an eighth of a second's.
        `hash_key`: random bytes keying the per-source table (see `SourceRateLimiter`)."""
        self.store = store
        self.enabled = enabled
        self.stats: Counter[str] = Counter()
        self._by_source = SourceRateLimiter(RELAY_SOURCE_RATE, RELAY_SOURCE_BURST, hash_key)
        self._by_node = RateLimiter(rate, max(RELAY_BURST, rate / 8))
        self._routes: dict[tuple[Endpoint, bytes], _Route] = {}

    def forward(self, data: bytes, addr: Endpoint, now: float) -> tuple[bytes, Endpoint] | None:
        """The envelope to send and where, or None (dropped and counted)."""
        parsed = decode_relay_to(data)
        if parsed is None:
            self.stats["relay_malformed"] += 1
            return None
        if not self.enabled:
            self.stats["relay_disabled"] += 1
            return None
        if not self._by_source.allow(addr[0], now):
            self.stats["relay_source_limited"] += 1
            return None
        dest_static, datagram = parsed
        route = self._routes.get((addr, dest_static))
        if route is None or now >= route.until:
            route = self._lookup(addr, dest_static, now)
            if route is None:
                return None
        if not self._by_node.allow((route.network, route.src_static), now, len(data)):
            self.stats["relay_node_limited"] += 1
            return None
        self.stats["relay_forwarded"] += 1
        return encode_relay_from(route.src_static, datagram), route.dest

    def _lookup(self, addr: Endpoint, dest_static: bytes, now: float) -> _Route | None:
        src = self.store.member_by_endpoint(addr, now)
        if src is None:
            self.stats["relay_unknown_source"] += 1
            return None
        dest = self.store.member(src.network, dest_static, now)
        if dest is None or dest.static == src.static:
            self.stats["relay_unknown_dest"] += 1
            return None
        if not self.store.introduced(src.network, src.static, dest.static, now):
            self.stats["relay_not_introduced"] += 1
            return None
        if len(self._routes) >= ROUTE_CACHE_MAX:
            self._routes.clear()
        route = _Route(src.network, src.static, dest.endpoint, now + ROUTE_CACHE_TTL)
        self._routes[(addr, dest_static)] = route
        return route

    def sweep(self, now: float) -> None:
        self._routes = {k: r for k, r in self._routes.items() if now < r.until}
        self._by_source.sweep(now)
        self._by_node.sweep(now)
