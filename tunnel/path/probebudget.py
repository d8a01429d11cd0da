"""How many probe datagrams a node sends, all peers together: one token bucket (sans-IO).

Probes are the datagrams a node sends to an address no authenticated packet has come from yet:
punching initiations and pings to announced candidates, and the random-port pings of port
prediction (`tunnel.path.prediction`). Each peer bounds its own (`tunnel.path.manager`); this
bucket bounds their sum, so however many members ask for introductions at once the node never
sprays more than `RATE` a second.

Sizing: a peer in its fast punching phase sends 5 rounds a second to its usually 2 candidates,
10 datagrams a second; port prediction pings 50 a second. 200 a second with a burst of 400 lets
some twenty peers punch at once (a `ptunnel up` with many connects) beside one port prediction,
and caps the worst case at about 30 KB/s of 148-byte initiations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

RATE: Final = 200.0  # probe datagrams per second, every peer together
BURST: Final = 400.0  # datagrams


@dataclass
class ProbeBudget:
    """Tokens refilled at `rate` per second up to `burst`; one probe datagram costs one."""

    rate: float = RATE
    burst: float = BURST
    tokens: float = BURST
    stamp: float | None = None
    refused: int = 0  # probes not sent for want of a token (for the logs and tests)

    def take(self, now: float) -> bool:
        """One token, if there is one now."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            self.refused += 1
            return False
        self.tokens -= 1.0
        return True
