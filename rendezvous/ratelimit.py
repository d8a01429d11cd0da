"""Token-bucket rate limits keyed by source address or node, with bounded memory.

Follows the shape of wireguard-go's `ratelimiter`: one bucket per key, refilled continuously at
`rate` per second up to `burst`; a full bucket carries no information, so it is forgotten, and
the table never grows past `max_keys` (when full, unknown keys are refused rather than letting a
flood of spoofed sources evict the buckets of real ones).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

# Per source IP, rendezvous messages: a node sends a handful per 20 s refresh; 20/s with a burst
# of 40 leaves room for `ptunnel list` and netcheck from several nodes behind one NAT.
SOURCE_RATE = 20.0  # messages per second
SOURCE_BURST = 40.0  # messages
# Per registered node, relayed bytes: enough for an interactive session or a modest transfer
# (100 Mbit/s), the same default as the `relay_rate` key of rendezvous.yaml.
RELAY_RATE = 12_500_000.0  # bytes per second
RELAY_BURST = 256_000.0  # bytes
MAX_KEYS = 65_536  # buckets kept; ~100 bytes each, so a few MB at most


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """`allow(key, now, cost)` spends `cost` tokens from `key`'s bucket if it has them."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, _Bucket] = {}
        self._last_sweep = 0.0

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self.sweep(now)
                if len(self._buckets) >= self.max_keys:
                    return False
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        return True

    def sweep(self, now: float) -> None:
        """Forget buckets that have refilled completely (they would start full anyway)."""
        full_after = self.burst / self.rate
        self._buckets = {
            k: b for k, b in self._buckets.items() if now - b.stamp < full_after
        }
        self._last_sweep = now

    def __len__(self) -> int:
        return len(self._buckets)
