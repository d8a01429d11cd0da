"""Relay policy (pure): which opaque datagrams the rendezvous forwards, and to whom.

Relaying is the fallback when two nodes cannot punch a direct path. The datagrams stay
end-to-end encrypted by the nodes' Noise session; the server only rewrites the envelope
(`rendezvous/protocol.py` has the layout):

    node A -> server: [0x40 RELAY_TO][grant id 16][tag 16][datagram]
    server -> node B: [0x41 RELAY_FROM][A's static 32][datagram]   (same size: no amplification)

**Grants.** A CONNECT between A and B (`grant`) issues two random tokens, one per direction,
and the INTRODUCED of each side carries its own. The store maps each token's id to (network,
source, destination, expiry); the grant ends when the introduction does (`INTRODUCTION_TTL`)
or with either side's registration. Introducing the same pair again extends the grants and
keeps their tokens, so a lost INTRODUCED costs nothing.

A datagram is forwarded only when, in this order (the first failure drops and counts it):

1. relaying is on, and the envelope parses;
2. its grant id names a live grant of an admitted network whose two members are registered.
   An id this server has not issued or seen valid lately costs a store query, so those
   lookups are rate limited per source IP first (`RELAY_SOURCE_RATE`, a fixed table: spoofed
   sources cost no memory). Ids it issued or saw valid are exempt, so made-up ids sent from a
   member's address cannot starve the member's own lookups;
3. its tag is the MAC, under the grant's token, of the datagram's length and session header
   (`protocol.relay_tag`): the sender holds the token. The source address plays no part, so
   a host spoofing A's IP:port gets nothing forwarded and spends none of A's budget, and A
   keeps relaying after its NAT moves it;
4. the node's, the network's and the whole server's byte budgets (`relay_rate`,
   `relay_network_rate`, `relay_total_rate`) all have room; all three are charged, or none.

While the store cannot be reached (Redis down), check 2 falls back to the route this server
last saw valid for that id, if any: no server can end a grant then either, and a relayed
session survives the outage; an id never seen valid is dropped.

**Across servers.** When A and B registered at different servers of one deployment, the server
A sends to checks and charges the datagram as above and hands the envelope to B's server
(`Send.via`, Redis pub/sub in `rendezvous.pushbus`), which sends it from its own socket, the
only one B's NAT admits. We relay server to server rather than move both nodes to one server:
moving would take a node off the server it chose (nearest, or the one still up) and would need
a new message; the relay already authenticates every datagram (3) and is limited before the
hand-over (4), and the link between servers is the deployment's own Redis.

Check 2 reads the store (one query: 27 µs for a live grant, 9 µs for an unknown id on SQLite
in memory, measured with 1,000 grants), so a grant that passed is cached for
`ROUTE_CACHE_TTL`: the store stays the source of truth, and a grant that ended (a member left
or moved) stops being honoured at most that much later. An introduction fills the cache for
both of its grants from the records it already read, so granting costs no lookup.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rendezvous import protocol as p
from rendezvous.admission import OPEN, Admission
from rendezvous.protocol import Endpoint
from rendezvous.ratelimit import (
    RELAY_BURST,
    RELAY_NETWORK_RATE,
    RELAY_RATE,
    RELAY_TOTAL_RATE,
    RateLimiter,
    SourceRateLimiter,
    spend_all,
)
from rendezvous.store import Member, RelayGrant, Store, StoreUnavailable

# Before a store lookup of an unknown grant id: per source IP, lookups. A node needs one lookup
# per grant and `ROUTE_CACHE_TTL`; 200/s leaves room for many nodes behind one NAT while
# bounding what a flood of made-up ids costs the store.
RELAY_SOURCE_RATE = 200.0  # lookups per second
RELAY_SOURCE_BURST = 400.0  # lookups
ROUTE_CACHE_TTL = 1.0  # seconds; how stale a relay permission may be
ROUTE_CACHE_MAX = 16_384  # routes; cleared wholesale when full (only valid grants get in)
# A route past its TTL is still remembered this long as "an id that was valid", which exempts
# its next lookup from the per-source limit (see `forward`): a relayed session idle for up to
# this long resumes even while someone floods made-up ids from its address.
ROUTE_KEEP = 300.0  # seconds
# Relay permission from one CONNECT; it also ends as soon as either side's registration does.
INTRODUCTION_TTL = 24 * 3600.0  # seconds
_TOTAL = "total"  # the key of the whole server's bucket

# Why a RELAY_TO was dropped: the stats keys, in the order of the checks above.
MALFORMED = "relay_malformed"
DISABLED = "relay_disabled"
SOURCE_LIMITED = "relay_source_limited"
UNKNOWN_GRANT = "relay_unknown_grant"
NETWORK_REFUSED = "relay_network_refused"
BAD_TAG = "relay_bad_tag"
NODE_LIMITED = "relay_node_limited"
NETWORK_LIMITED = "relay_network_limited"
TOTAL_LIMITED = "relay_total_limited"
STORE_UNAVAILABLE = "relay_store_unavailable"  # a lookup the store could not answer
FORWARDED = "relay_forwarded"
FORWARDED_BYTES = "relay_forwarded_bytes"
_CAPS = (NODE_LIMITED, NETWORK_LIMITED, TOTAL_LIMITED)


@dataclass(frozen=True, slots=True)
class _Route:
    grant: RelayGrant
    until: float


class RelayPolicy:
    def __init__(self, store: Store, enabled: bool = True, rate: float = RELAY_RATE,
                 hash_key: bytes = b"", network_rate: float = RELAY_NETWORK_RATE,
                 total_rate: float = RELAY_TOTAL_RATE, admission: Admission = OPEN,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        """`rate`, `network_rate`, `total_rate`: relayed bytes per second per node, per network
        and in all; each burst is an eighth of a second's worth (at least `RELAY_BURST`).
        `hash_key`: random bytes keying the per-source table (see `SourceRateLimiter`)."""
        self.store = store
        self.enabled = enabled
        self.admission = admission
        self.stats: Counter[str] = Counter()
        self._rng = rng
        self._by_source = SourceRateLimiter(RELAY_SOURCE_RATE, RELAY_SOURCE_BURST, hash_key)
        self._by_node = RateLimiter(rate, max(RELAY_BURST, rate / 8))
        self._by_network = RateLimiter(network_rate, max(RELAY_BURST, network_rate / 8))
        self._total = RateLimiter(total_rate, max(RELAY_BURST, total_rate / 8), max_keys=1)
        self._routes: dict[bytes, _Route] = {}

    def grant(self, a: Member, b: Member, now: float) -> tuple[bytes, bytes]:
        """Permit relaying both ways between introduced members `a` and `b` (live records of
        one network): the tokens for a→b (give it to `a`) and b→a (give it to `b`)."""
        until = now + INTRODUCTION_TTL
        ab, ba = self._rng(p.RELAY_TOKEN_SIZE), self._rng(p.RELAY_TOKEN_SIZE)
        ab, ba = self.store.grant_relay_pair(a.network, a.static, b.static,
                                             (p.relay_grant_id(ab), ab),
                                             (p.relay_grant_id(ba), ba), until, now)
        # Known from the start, so a flood of made-up ids from the member's address (which
        # exhausts that address's lookups) cannot keep its first relayed packet out. Built
        # from the records in hand, as the store's lookup would return them: no round trip.
        for src, dest, token in ((a, b, ab), (b, a, ba)):
            grant = RelayGrant(src.network, src.static, dest.static, token, dest.endpoint,
                               dest.server)
            self._cache(p.relay_grant_id(token), grant, now)
        return ab, ba

    def forward(self, data: bytes, addr: Endpoint,
                now: float) -> tuple[bytes, Endpoint, str] | None:
        """The envelope to send, where, and the server the destination registered at (its NAT
        admits only that one); or None (dropped and counted)."""
        if not self.enabled:
            self.stats[DISABLED] += 1
            return None
        parsed = p.decode_relay_to(data)
        if parsed is None:
            self.stats[MALFORMED] += 1
            return None
        grant_id, tag, datagram = parsed
        route = self._routes.get(grant_id)
        if route is None or now >= route.until:
            # Only ids never seen valid are limited by source: a flood of made-up ids from A's
            # address must not stop A's own grant from being looked up again.
            if route is None and not self._by_source.allow(addr[0], now):
                self.stats[SOURCE_LIMITED] += 1
                return None
            try:
                route = self._lookup(grant_id, now)
            except StoreUnavailable:
                # No server can end a grant while the store is down either: the route this
                # server last saw valid (still in `route`) keeps a relayed session going.
                self.stats[STORE_UNAVAILABLE] += 1
            if route is None:
                return None
        grant = route.grant
        if not p.relay_tag_valid(grant.token, datagram, tag):
            self.stats[BAD_TAG] += 1
            return None
        refused = spend_all(((self._by_node, (grant.network, grant.src)),
                             (self._by_network, grant.network), (self._total, _TOTAL)),
                            now, len(data))
        if refused >= 0:
            self.stats[_CAPS[refused]] += 1
            return None
        self.stats[FORWARDED] += 1
        self.stats[FORWARDED_BYTES] += len(data)
        return p.encode_relay_from(grant.src, datagram), grant.dest_endpoint, grant.dest_server

    def _lookup(self, grant_id: bytes, now: float) -> _Route | None:
        """Raises StoreUnavailable (the route cache unchanged) when the store cannot answer."""
        grant = self.store.relay_grant(grant_id, now)
        self._routes.pop(grant_id, None)
        if grant is None:
            self.stats[UNKNOWN_GRANT] += 1
            return None
        if not self.admission.admits(grant.network):
            self.stats[NETWORK_REFUSED] += 1
            return None
        return self._cache(grant_id, grant, now)

    def _cache(self, grant_id: bytes, grant: RelayGrant, now: float) -> _Route:
        if len(self._routes) >= ROUTE_CACHE_MAX:
            self._routes.clear()
        route = self._routes[grant_id] = _Route(grant, now + ROUTE_CACHE_TTL)
        return route

    def sweep(self, now: float) -> None:
        self._routes = {k: r for k, r in self._routes.items() if now < r.until + ROUTE_KEEP}
        self._by_source.sweep(now)
        self._by_node.sweep(now)
        self._by_network.sweep(now)
        self._total.sweep(now)

    def summary(self) -> str:
        """The relay's figures for the server's stats line."""
        s = self.stats
        dropped = ", ".join(f"{key.removeprefix('relay_')} {s[key]}"
                            for key in (MALFORMED, DISABLED, SOURCE_LIMITED, UNKNOWN_GRANT,
                                        NETWORK_REFUSED, BAD_TAG, STORE_UNAVAILABLE) if s[key])
        caps = ", ".join(f"{key.removeprefix('relay_').removesuffix('_limited')} {s[key]}"
                         for key in _CAPS)
        return (f"relay: forwarded {s[FORWARDED]} packets, {s[FORWARDED_BYTES]} bytes; "
                f"dropped {dropped or 'none'}; caps hit {caps}")
