"""Finding and keeping the best path to one peer: candidates, probes, relay fallback (sans-IO).

Follows ICE (RFC 8445) in spirit and Tailscale's magicsock in its simplifications: both peers get
each other's candidates from the rendezvous at once and probe every candidate at the same time, so
each side's outbound probe opens its own NAT for the other's (RFC 4787 hole punching). A probe is
always authenticated (a Noise handshake initiation before a session exists, an encrypted path ping
after), so an outsider cannot forge a working path. Any authenticated packet from an address we did
not know makes it a *peer-reflexive* candidate: that is how a node behind an endpoint-independent
NAT reaches one behind a symmetric NAT, whose real port only shows up in the packets it sends.

Preference: LAN, then a direct public or peer-reflexive path (lower RTT first), then the relay
through the rendezvous. The relay is used only when no direct path has worked for
`RELAY_FALLBACK_AFTER` seconds; probing continues in the background and the first direct path that
answers replaces the relay. When the current path goes silent while we are sending, every candidate
is probed again and the owner is asked to re-punch through the rendezvous.

The manager never sends anything itself: the node asks `probes_due(now)` which addresses to probe,
reports answers with `on_probe_answered` and every authenticated packet with `on_authenticated`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from tunnel.addresses import Addr

# Protocol timing, in seconds, with the reasons.
PUNCH_INTERVAL = 0.2  # while punching: NATs on both sides must see outbound packets close together
PUNCH_DURATION = 10.0  # fast probing lasts this long after an introduction (then slows down)
RELAY_FALLBACK_AFTER = 5.0  # no direct path by then: use the relay (issue: "within 5 s")
BACKGROUND_PROBE_INTERVAL = 5.0  # on the relay or a worse path, keep trying direct candidates
CANDIDATE_TIMEOUT = 15.0  # a path with no authenticated packet for this long is not working
SILENCE_TIMEOUT = 3.0  # sending but hearing nothing this long: the path (NAT mapping) is gone
RTT_SWITCH_RATIO = 0.7  # switch between direct paths of one kind only for a clearly lower RTT
# The peer's data arrives from another address while the path in use has been quiet this long:
# the peer moved (it restarted on a new port, or its NAT gave it a new mapping). Follow it, as
# WireGuard follows the source of the latest authenticated packet.
ROAM_AFTER = 1.0


class Kind(enum.IntEnum):
    """Candidate kinds; a lower value is preferred."""

    LAN = 0
    PUBLIC = 1
    REFLEXIVE = 2
    RELAY = 3


@dataclass(slots=True)
class Candidate:
    addr: Addr
    kind: Kind
    probes_sent: int = 0
    last_heard: float | None = None
    rtt: float | None = None

    def working(self, now: float) -> bool:
        return self.last_heard is not None and now - self.last_heard < CANDIDATE_TIMEOUT


@dataclass(frozen=True, slots=True)
class Path:
    """Where packets for the peer go now: a direct address, or the relay (`addr` is None)."""

    kind: Kind
    addr: Addr | None
    rtt: float | None

    @property
    def direct(self) -> bool:
        return self.kind != Kind.RELAY


@dataclass(frozen=True, slots=True)
class PathChanged:
    old: Path | None
    new: Path | None


@dataclass(frozen=True, slots=True)
class RepunchNeeded:
    """The path went silent: ask the rendezvous to introduce us again (our mapping may be new)."""


@dataclass(frozen=True, slots=True)
class CandidateReport:
    """For `status`/`ping`: what was tried and how it went."""

    addr: Addr
    kind: str
    probes_sent: int
    working: bool
    rtt_ms: float | None


PathEvent = PathChanged | RepunchNeeded


@dataclass
class PathManager:
    """Candidate paths to one peer and the choice among them. All times are `now` seconds."""

    started: float
    relay_allowed: bool = True
    candidates: dict[Addr, Candidate] = field(default_factory=dict)
    path: Path | None = None
    punch_until: float = 0.0
    next_probe: float = 0.0
    awaiting_since: float | None = None  # first send not yet followed by any authenticated packet
    last_heard: float | None = None
    relay_heard: float | None = None
    _events: list[PathEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.punch_until = self.started + PUNCH_DURATION
        self.next_probe = self.started

    # Inputs ---------------------------------------------------------------------------------

    def add_candidates(self, addrs: Iterable[Addr], kind: Kind, now: float) -> None:
        """New candidates from an introduction: start (or restart) fast probing."""
        for addr in addrs:
            known = self.candidates.get(addr)
            if known is None:
                self.candidates[addr] = Candidate(addr, kind)
            elif kind < known.kind:
                known.kind = kind
        self.punch_until = now + PUNCH_DURATION
        self.next_probe = now

    def on_authenticated(self, addr: Addr | None, now: float) -> None:
        """Any packet that passed authentication; `addr` None means it came through the relay."""
        self.last_heard = now
        self.awaiting_since = None
        path = self.path
        if addr is None:
            self.relay_heard = now
            if path is not None and not path.direct:
                return  # the relay in use goes on working: nothing to choose (hot path)
        else:
            candidate = self.candidates.get(addr)
            if candidate is None:
                candidate = self.candidates[addr] = Candidate(addr, Kind.REFLEXIVE)
            was_working = candidate.last_heard is not None and candidate.working(now)
            candidate.last_heard = now
            if was_working and path is not None and path.addr == addr:
                return  # a packet on the path in use changes no choice (hot path)
        self._choose(now)

    def on_data(self, addr: Addr, now: float, moved: bool = False) -> None:
        """The peer's data (not a probe) came authenticated from direct address `addr`;
        `moved`: the peer is known to be a new process, so its old address is dead."""
        path = self.path
        if path is None or not path.direct or path.addr == addr:
            return
        held = self.candidates.get(path.addr) if path.addr is not None else None
        if (moved or held is None or held.last_heard is None
                or now - held.last_heard > ROAM_AFTER):
            if held is not None:
                held.last_heard = None  # the peer no longer sends from there
            self._choose(now)

    def on_probe_answered(self, addr: Addr, rtt: float, now: float) -> None:
        candidate = self.candidates.get(addr)
        if candidate is not None:
            candidate.rtt = rtt if candidate.rtt is None else 0.75 * candidate.rtt + 0.25 * rtt
        self.on_authenticated(addr, now)

    def on_sent(self, now: float) -> None:
        """A packet that the peer answers (data or ping) left on the current path."""
        if self.awaiting_since is None:
            self.awaiting_since = now

    # Outputs --------------------------------------------------------------------------------

    def probes_due(self, now: float) -> list[Addr]:
        """Addresses to probe now; empty when it is not time yet or the best path is in use."""
        if now < self.next_probe:
            return []
        punching = now < self.punch_until
        self.next_probe = now + (PUNCH_INTERVAL if punching else BACKGROUND_PROBE_INTERVAL)
        if not punching and self.path is not None and self.path.kind == Kind.LAN:
            return []  # nothing beats a LAN path; keepalives hold it
        due = []
        for candidate in self.candidates.values():
            if self.path is not None and candidate.addr == self.path.addr and not punching:
                continue  # the path in use is checked by the traffic on it
            candidate.probes_sent += 1
            due.append(candidate.addr)
        return due

    def use_relay(self, now: float) -> bool:
        """Whether packets should go through the relay now (no direct path, fallback time over)."""
        return (
            self.relay_allowed
            and (self.path is None or not self.path.direct)
            and now - self.started >= RELAY_FALLBACK_AFTER
        )

    def get_timer(self) -> float:
        deadline = self.next_probe
        if self.path is not None and self.path.direct:
            deadline = min(deadline, self._silence_deadline())
        if self.path is None and self.relay_allowed:
            deadline = min(deadline, self.started + RELAY_FALLBACK_AFTER)
        return deadline

    def handle_timer(self, now: float) -> None:
        if self.path is not None and self.path.direct and now >= self._silence_deadline():
            self._path_went_silent(now)
        self._choose(now)

    def next_event(self) -> PathEvent | None:
        return self._events.pop(0) if self._events else None

    def report(self, now: float) -> list[CandidateReport]:
        return [
            CandidateReport(
                addr=c.addr, kind=c.kind.name.lower(), probes_sent=c.probes_sent,
                working=c.working(now), rtt_ms=None if c.rtt is None else round(c.rtt * 1e3, 2),
            )
            for c in sorted(self.candidates.values(), key=lambda c: (c.kind, c.addr))
        ]

    # Internals ------------------------------------------------------------------------------

    def _silence_deadline(self) -> float:
        if self.awaiting_since is None:
            return float("inf")  # nothing outstanding: silence means nothing
        return self.awaiting_since + SILENCE_TIMEOUT

    def _path_went_silent(self, now: float) -> None:
        assert self.path is not None and self.path.addr is not None
        stale = self.candidates.get(self.path.addr)
        if stale is not None:
            stale.last_heard = None
        self.awaiting_since = None
        self.punch_until = now + PUNCH_DURATION
        self.next_probe = now
        self._events.append(RepunchNeeded())

    def _choose(self, now: float) -> None:
        # The path in use stays usable however quiet it is: only unanswered sends (a silence,
        # which clears its `last_heard`) take it away. An idle tunnel must not flap.
        current = self.path.addr if self.path is not None else None
        working = [c for c in self.candidates.values()
                   if c.working(now) or (c.addr == current and c.last_heard is not None)]
        best: Path | None = None
        if working:
            top = min(working, key=lambda c: (c.kind, c.rtt if c.rtt is not None else 1e9))
            best = Path(top.kind, top.addr, top.rtt)
            held_path = self.path
            if (held_path is not None and held_path.direct and held_path.addr != top.addr
                    and held_path.addr in self.candidates
                    and self.candidates[held_path.addr].last_heard is not None):
                held = self.candidates[held_path.addr]
                clearly_better = top.kind < held.kind or (
                    top.kind == held.kind and top.rtt is not None and held.rtt is not None
                    and top.rtt < RTT_SWITCH_RATIO * held.rtt
                )
                if not clearly_better:
                    best = Path(held.kind, held.addr, held.rtt)
        elif self.relay_allowed and (
            self.relay_heard is not None or now - self.started >= RELAY_FALLBACK_AFTER
        ):
            best = Path(Kind.RELAY, None, None)
        if best != self.path and (best is None or self.path is None
                                  or (best.kind, best.addr) != (self.path.kind, self.path.addr)):
            self._events.append(PathChanged(self.path, best))
        self.path = best
