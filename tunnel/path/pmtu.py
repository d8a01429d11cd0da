"""Datagram size discovery for one path: DPLPMTUD (RFC 8899) reduced to what ptunnel needs.

Every path starts at `BASE_SIZE` (1200 bytes of UDP payload, QUIC's minimum, safe on the
internet). Once a direct path is in use, padded probes of the sizes in `PROBE_SIZES` are sent
largest first, with "don't fragment" set on the socket; the first size that is answered becomes
the path's datagram size. Loopback carries 65,000-byte datagrams and a 1500-byte-MTU LAN 1472, so
each datagram's fixed Python cost is spread over up to 54 times more bytes. A path change (or a
path that went silent) starts again from `BASE_SIZE`: the new path has not proved anything yet.
The relay always uses `BASE_SIZE`. `limit` is the largest datagram the peer reads (its transport
parameters): no probe and no datagram is larger, whatever the path carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

BASE_SIZE: Final = 1200  # bytes of UDP payload
# UDP payload sizes to try: loopback (MTU 65536), jumbo frames (MTU 9000), Ethernet (MTU 1500);
# each is the link MTU less 28 bytes of IPv4 and UDP headers.
PROBE_SIZES: Final = (65000, 8972, 1472)
PROBE_TIMEOUT: Final = 0.4  # s; a probe answers within one RTT, and a lost one costs only this wait


@dataclass
class PathMtu:
    size: int = BASE_SIZE
    pending: list[int] = field(default_factory=list)  # sizes still to try, largest first
    probing: int | None = None  # the size of the probe in flight
    deadline: float | None = None
    limit: int = 65507  # bytes; the peer reads no larger UDP payload (at least BASE_SIZE)

    def restart(self, now: float) -> None:
        """A new path: back to the base size, and probe for more."""
        self.size = BASE_SIZE
        self.pending = self._sizes()
        self.probing = None
        self.deadline = now

    def set_limit(self, limit: int) -> None:
        """The peer reads datagrams of at most `limit` bytes: never probe or send larger."""
        self.limit = max(limit, BASE_SIZE)
        self.size = min(self.size, self.limit)  # a path that carried more carries this
        if self.pending or self.probing is not None:  # probing already: the sizes left, capped
            self.pending = [s for s in self._sizes() if s > self.size]

    def _sizes(self) -> list[int]:
        """Probe sizes, largest first, none past the peer's limit (the limit itself instead)."""
        sizes = {min(size, self.limit) for size in PROBE_SIZES}
        return sorted((s for s in sizes if s > BASE_SIZE), reverse=True)

    def stop(self) -> None:
        """No probing (the relay): base size only."""
        self.size = BASE_SIZE
        self.pending = []
        self.probing = None
        self.deadline = None

    def probe_due(self, now: float) -> int | None:
        """The size of a probe to send now, if one is due."""
        if self.deadline is None or now < self.deadline:
            return None
        if self.probing is not None:
            self.probing = None  # unanswered: that size does not fit this path
        if not self.pending:
            self.deadline = None
            return None
        self.probing = self.pending.pop(0)
        self.deadline = now + PROBE_TIMEOUT
        return self.probing

    def on_probe_answered(self, size: int) -> bool:
        """A probe of `size` bytes came through; True if the path's size grew."""
        if size <= self.size or size > self.limit:  # a probe sent before the limit was known
            return False
        self.size = size
        self.pending = [s for s in self.pending if s > size]  # larger ones already failed
        self.probing = None
        self.deadline = None
        return True

    def get_timer(self) -> float | None:
        return self.deadline
