"""One peer as the node sees it: its paths, channel, punching state; and path pseudo addresses.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunnel.addresses import Addr
from tunnel.channel.channel import Channel
from tunnel.channel.events import ChannelEvent
from tunnel.keys.netkeys import fingerprint
from tunnel.path.manager import PathManager
from tunnel.path.pmtu import PathMtu
from tunnel.path.prediction import Opener, Prober
from tunnel.session.wire import TRANSPORT_OVERHEAD

if TYPE_CHECKING:
    from tunnel.node.prediction import SpraySockets  # the shell's sockets; only a type here

CHANNEL_HEADER = 9  # payload type (1) + sender incarnation (4) + receiver incarnation (4)
RELAY_OVERHEAD = 33  # relay envelope: type (1) + static key (32)


def channel_budget(datagram_size: int, relayed: bool) -> int:
    """Largest channel packet that fits a UDP payload of `datagram_size` on this path."""
    return datagram_size - TRANSPORT_OVERHEAD - CHANNEL_HEADER - (RELAY_OVERHEAD if relayed else 0)


# Without a direct path, ask the rendezvous to introduce us again (the peer's NAT may have
# rebooted onto new ports): after this long, then doubling up to the cap (seconds).
REPUNCH_FIRST = 3.0
REPUNCH_MAX = 60.0


@dataclass
class PeerLink:
    """Everything about one peer: name, paths, channel, and who listens to its events."""

    static: bytes
    path: PathManager
    name: str | None = None
    channel: Channel | None = None
    incarnation: bytes = b""
    peer_incarnation: bytes = bytes(4)
    connected_at: float | None = None
    pings: dict[bytes, tuple[float, Addr, int]] = field(default_factory=dict)  # sent, to, size
    mtu: PathMtu = field(default_factory=PathMtu)
    # Birthday-paradox punching (tunnel.path.prediction): at most one attempt per link.
    birthday_tried: bool = False
    opener: Opener | None = None
    spray: SpraySockets | None = None
    prober: Prober | None = None
    rtt: float | None = None
    initiation: bytes = b""  # our pending handshake initiation, re-sent to new probe targets
    relay_candidate: bool = False
    repunch_at: float = 0.0
    repunch_interval: float = REPUNCH_FIRST
    on_event: Callable[[PeerLink, ChannelEvent], None] | None = None
    on_change: list[Callable[[PeerLink], None]] = field(default_factory=list)

    def last_rtt(self) -> float | None:
        return self.rtt

    @property
    def ready(self) -> bool:
        return self.channel is not None and self.channel.is_open and self.path.path is not None

    def describe_path(self) -> str:
        path = self.path.path
        if path is None:
            return "no path"
        rtt = f", rtt {self.rtt * 1e3:.1f} ms" if self.rtt is not None else ""
        if not path.direct:
            return f"relay via rendezvous{rtt}"
        assert path.addr is not None
        return f"direct {path.kind.name.lower()} {path.addr[0]}:{path.addr[1]}{rtt}"

    def status(self, now: float) -> dict[str, Any]:
        """This peer for `ptunnel status`."""
        stats = self.channel.stats() if self.channel is not None else None
        return {
            "name": self.name,
            "fingerprint": fingerprint(self.static),
            "path": self.describe_path(),
            "direct": bool(self.path.path and self.path.path.direct),
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1e3, 3),
            "bytes_sent": stats.stream_bytes_sent if stats else 0,
            "bytes_received": stats.stream_bytes_received if stats else 0,
            "open_streams": stats.open_streams if stats else 0,
            "connected_for_s": None if self.connected_at is None
            else round(now - self.connected_at, 1),
            "candidates": [
                {"addr": f"{r.addr[0]}:{r.addr[1]}", "kind": r.kind, "probes": r.probes_sent,
                 "working": r.working, "rtt_ms": r.rtt_ms}
                for r in self.path.report(now)
            ],
        }
