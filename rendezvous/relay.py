"""Relay policy (pure): which opaque datagrams the rendezvous forwards, and to whom.

Relaying is the fallback when two nodes cannot punch a direct path. The datagrams stay
end-to-end encrypted by the nodes' Noise session; the server only rewrites the envelope:

    node A -> server: [0x40 RELAY_TO][B's static 32][datagram]
    server -> node B: [0x41 RELAY_FROM][A's static 32][datagram]   (same size: no amplification)

A datagram is forwarded only when (1) its source address is the registered endpoint of a live
member A, (2) the destination B is a live member of the same network, (3) the server introduced
A and B (CONNECT) and (4) A is within its byte rate. Anything else is dropped and counted.
"""

from __future__ import annotations

from collections import Counter

from rendezvous.protocol import Endpoint, decode_relay_to, encode_relay_from
from rendezvous.ratelimit import RELAY_BURST, RELAY_RATE, RateLimiter
from rendezvous.store import Store

# Before the (SQL) lookup of the sender: per source IP, packets. A relayed bulk transfer at
# `RELAY_RATE` in 1200-byte datagrams is ~1,700 packets/s, so 4,000/s leaves room.
RELAY_SOURCE_RATE = 4000.0  # packets per second
RELAY_SOURCE_BURST = 8000.0  # packets


class RelayPolicy:
    def __init__(self, store: Store, enabled: bool = True, rate: float = RELAY_RATE) -> None:
        """`rate`: relayed bytes per second per node; the burst is an eighth of a second's."""
        self.store = store
        self.enabled = enabled
        self.stats: Counter[str] = Counter()
        self._by_source = RateLimiter(RELAY_SOURCE_RATE, RELAY_SOURCE_BURST)
        self._by_node = RateLimiter(rate, max(RELAY_BURST, rate / 8))

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
        if not self._by_node.allow((src.network, src.static), now, len(data)):
            self.stats["relay_node_limited"] += 1
            return None
        self.stats["relay_forwarded"] += 1
        return encode_relay_from(src.static, datagram), dest.endpoint

    def sweep(self, now: float) -> None:
        self._by_source.sweep(now)
        self._by_node.sweep(now)
