"""Per-source token bucket for handshakes under load (wireguard-go `ratelimiter/ratelimiter.go`).

Each source IP may start `RATE_LIMIT_PER_SECOND` handshakes a second with a burst of
`RATE_LIMIT_BURST`. Only applied while the device is under load, and only to handshake messages
that carry a valid mac2 (so the source address is proven to receive our packets). Time is passed in.

Not to be confused with `rendezvous/ratelimit.py`, the server's limiters for requests and relayed
bytes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

from tunnel.session.constants import (
    RATE_LIMIT_BURST,
    RATE_LIMIT_GC_AFTER,
    RATE_LIMIT_MAX_SOURCES,
    RATE_LIMIT_PER_SECOND,
)

_COST: Final = 1.0 / RATE_LIMIT_PER_SECOND  # seconds of credit one handshake costs
_MAX_CREDIT: Final = _COST * RATE_LIMIT_BURST


class HandshakeRateLimiter:
    """Token buckets by source key (the IP address; the port is the attacker's to choose)."""

    __slots__ = ("_buckets", "_last_gc", "_max_sources")

    def __init__(self, max_sources: int = RATE_LIMIT_MAX_SOURCES) -> None:
        # source -> (credit in seconds, time of last update)
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._last_gc = 0.0
        self._max_sources = max_sources

    def allow(self, source: Hashable, now: float) -> bool:
        """Spend one handshake's credit of `source`; False when it has none left."""
        if now - self._last_gc >= RATE_LIMIT_GC_AFTER:
            self._collect(now)
        entry = self._buckets.get(source)
        if entry is None:
            if len(self._buckets) >= self._max_sources:
                return False  # table full of active sources: refuse newcomers until GC
            self._buckets[source] = (_MAX_CREDIT - _COST, now)
            return True
        credit, last = entry
        credit = min(credit + (now - last), _MAX_CREDIT)
        if credit >= _COST:
            self._buckets[source] = (credit - _COST, now)
            return True
        self._buckets[source] = (credit, now)
        return False

    def _collect(self, now: float) -> None:
        self._last_gc = now
        stale = [k for k, (_, last) in self._buckets.items() if now - last > RATE_LIMIT_GC_AFTER]
        for key in stale:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
