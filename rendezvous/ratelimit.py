"""Token-bucket rate limits, shaped after wireguard-go's `ratelimiter`.

Each key has a bucket refilled continuously at `rate` per second up to `burst`; a request costs
tokens (1 per packet, or its size in bytes) and is refused when the bucket lacks them.

Two tables, for two kinds of keys:
- `SourceRateLimiter`, for unauthenticated source addresses: a FIXED table allocated at start,
  indexed by a keyed hash of the address. A flood of spoofed sources therefore costs the server
  no memory at all (the "no state before authentication" rule); two addresses sharing a slot
  share a budget, which with 65,536 slots and a per-process hash key is rare and not steerable.
- `RateLimiter`, for authenticated keys (registered nodes, networks, the whole server): a dict,
  bounded by `max_keys`; buckets that have refilled completely carry no information and are
  swept. `spend_all` charges several of them (node, network, total) all or nothing, so a packet
  one cap refuses costs the others nothing.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

# Per source IP, rendezvous messages: a node sends a handful per 20 s refresh; 20/s with a burst
# of 40 leaves room for `ptunnel list` and netcheck from several nodes behind one NAT.
SOURCE_RATE = 20.0  # messages per second
SOURCE_BURST = 40.0  # messages
SOURCE_SLOTS = 65_536  # buckets; 2 x 8 bytes each = 1 MiB, allocated once
# Per registered node, relayed bytes: enough for an interactive session or a modest transfer
# (100 Mbit/s), the same default as the `relay_rate` key of rendezvous.yaml.
RELAY_RATE = 12_500_000.0  # bytes per second
RELAY_BURST = 256_000.0  # bytes
# Per network, relayed bytes: two nodes at `RELAY_RATE` each. A network is free to create, so
# this, not the per-node rate, bounds what one person can take from the server.
RELAY_NETWORK_RATE = 25_000_000.0  # bytes per second
# The whole server, relayed bytes: a 1 Gbit/s port. Operators set it to the egress they can pay.
RELAY_TOTAL_RATE = 125_000_000.0  # bytes per second
MAX_KEYS = 65_536  # authenticated buckets kept; ~100 bytes each


class SourceRateLimiter:
    """Fixed-size table of buckets for unauthenticated keys (IP address strings)."""

    def __init__(self, rate: float, burst: float, hash_key: bytes,
                 slots: int = SOURCE_SLOTS) -> None:
        self.rate = rate
        self.burst = burst
        self._key = hash_key[:64]
        self._slots = slots
        self._tokens = array("d", [burst]) * slots
        self._stamps = array("d", [0.0]) * slots

    def _slot(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "little") % self._slots

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        i = self._slot(key)
        elapsed = max(0.0, now - self._stamps[i])
        tokens = min(self.burst, self._tokens[i] + elapsed * self.rate)
        self._stamps[i] = now
        if tokens < cost:
            self._tokens[i] = tokens
            return False
        self._tokens[i] = tokens - cost
        return True

    def sweep(self, now: float) -> None:
        """Nothing to forget: the table never grows."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Buckets for authenticated keys; `allow(key, now, cost)` spends `cost` tokens if there."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, _Bucket] = {}

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._refilled(key, now)
        if bucket is None or bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        return True

    def _refilled(self, key: Hashable, now: float) -> _Bucket | None:
        """`key`'s bucket brought up to `now`; None when the table is full of live buckets."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self.sweep(now)
                if len(self._buckets) >= self.max_keys:
                    return None
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        return bucket

    def sweep(self, now: float) -> None:
        """Forget buckets that have refilled completely (they would start full anyway)."""
        full_after = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.stamp < full_after}

    def __len__(self) -> int:
        return len(self._buckets)


def spend_all(limits: Sequence[tuple[RateLimiter, Hashable]], now: float, cost: float) -> int:
    """Spend `cost` from every (limiter, key) bucket, or from none of them. Returns -1 when
    spent, else the index of the first limit that lacked the tokens."""
    buckets = []
    for i, (limiter, key) in enumerate(limits):
        bucket = limiter._refilled(key, now)
        if bucket is None or bucket.tokens < cost:
            return i
        buckets.append(bucket)
    for bucket in buckets:
        bucket.tokens -= cost
    return -1
