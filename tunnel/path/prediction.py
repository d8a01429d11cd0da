"""Port prediction for a port-randomizing ("symmetric") NAT: the birthday paradox (sans-IO).

After hyperdht's `holepuncher.js`. When one side's NAT gives every destination a fresh random
port, the other side cannot know where to send. So the randomizing side opens `SOCKETS` extra
sockets and sends one authenticated packet from each to the other side's public endpoint: its NAT
now holds `SOCKETS` random mappings, each open to that one endpoint. The other side, behind an
endpoint-independent NAT, sends authenticated pings to random ports of the randomizing side's
public address. Each ping hits an open mapping with chance SOCKETS / PORTS (256 / 64,512 = 0.4 %),
so 1,750 pings find one with probability 1 - (1 - 0.004)^1750 = 99.9 %; at `PROBE_RATE` that is
35 s at most and about 5 s on average. The first ping that gets through is answered, both sides
learn the path from authenticated packets, and it replaces the relay. Two randomizing NATs
cannot meet this way (each side's guess would need the other's), so that case is not attempted.

The two sides coordinate through the relay, which is why this runs only once a relayed session
exists: the randomizing side asks with a `PAYLOAD_PREDICTION` message after opening its sockets,
and asks again at `REQUEST_RESENDS` (the relay is UDP: one lost request must not leave the pair
on the relay for good). The probing side answers one request per introduction and per
`COOLDOWN`, whichever of request and introduction arrives first, and every ping of either side
takes a token of the node's probe budget (`tunnel.path.probebudget`).

An attempt that finds nothing (1 in 1,000 by the odds above; always, behind a NAT that allocates
ports some other way) is tried again while the pair still needs the relay: after `COOLDOWN`, then
doubling up to `RETRY_MAX`. A direct path found this way that is lost later (the NAT rebooted)
gets a new attempt after the same `COOLDOWN`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tunnel.addresses import Addr

SOCKETS: Final = 256  # extra sockets on the randomizing side (hyperdht: 256)
PROBE_RATE: Final = 50.0  # pings per second from the other side: ~1,750 over DURATION (hyperdht)
DURATION: Final = 35.0  # s; the whole attempt, after which the relay simply stays in use
# Where a randomizing NAT picks its ports (Linux's --random-fully range)
PORTS: Final = (1024, 65535)
REFRESH: Final = 15.0  # s; resend from every extra socket, so mappings outlive DURATION (UDP: 30 s)
MAX_BURST: Final = 20  # pings sent in one go after a stall (a late timer must not flood)
# s; the probing side runs at most one attempt per peer this often, and only after a fresh
# introduction: an attempt is up to PROBE_RATE x DURATION = 1,750 pings, which a peer must not be
# able to ask for again and again (issue 12, "No aiming").
COOLDOWN: Final = 120.0
# s after the first request: ask again, in case a request (or the introduction the probing side
# needs first) was lost; the probing side ignores the copies while it probes.
# The type spelled out: compiled, a bare-`Final` tuple of floats is never set (mypyc 1.x).
REQUEST_RESENDS: Final[tuple[float, ...]] = (2.0, 4.0, 8.0)
RETRY_MAX: Final = 3600.0  # s; the longest wait between attempts that found nothing


def random_port(rng: Callable[[int], bytes]) -> int:
    low, high = PORTS
    return low + int.from_bytes(rng(4), "big") % (high - low + 1)


@dataclass
class Prober:
    """The endpoint-independent side: pings random ports of `target_ip` at a steady rate."""

    target_ip: str
    started: float
    rng: Callable[[int], bytes]
    sent: int = 0
    stopped: bool = False

    def due(self, now: float) -> list[Addr]:
        if self.stopped or now - self.started > DURATION:
            self.stopped = True
            return []
        allowed = int((now - self.started) * PROBE_RATE) + 1 - self.sent
        count = max(0, min(allowed, MAX_BURST))
        self.sent += count
        return [(self.target_ip, random_port(self.rng)) for _ in range(count)]

    def get_timer(self) -> float | None:
        if self.stopped:
            return None
        return min(self.started + self.sent / PROBE_RATE, self.started + DURATION + 0.001)

    def stop(self) -> None:
        self.stopped = True


@dataclass
class Opener:
    """The randomizing side: when to (re)send from every extra socket, and when to give up."""

    started: float
    last_sent: float | None = None
    stopped: bool = False
    requests_sent: int = 0

    def request_due(self, now: float) -> bool:
        """Whether to send the prediction request (again) now."""
        if self.stopped or self.requests_sent > len(REQUEST_RESENDS):
            return False
        if self.requests_sent and now < self.started + REQUEST_RESENDS[self.requests_sent - 1]:
            return False
        self.requests_sent += 1
        return True

    def send_due(self, now: float) -> bool:
        if self.stopped or now - self.started > DURATION + REFRESH:
            return False
        if self.last_sent is None or now - self.last_sent >= REFRESH:
            self.last_sent = now
            return True
        return False

    def expired(self, now: float) -> bool:
        return self.stopped or now - self.started > DURATION + REFRESH

    def get_timer(self) -> float | None:
        if self.stopped:
            return None
        if self.last_sent is None:
            return self.started
        deadline = min(self.last_sent + REFRESH, self.started + DURATION + REFRESH + 0.001)
        if 0 < self.requests_sent <= len(REQUEST_RESENDS):
            deadline = min(deadline, self.started + REQUEST_RESENDS[self.requests_sent - 1])
        return deadline
