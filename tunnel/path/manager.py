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
`RELAY_FALLBACK_AFTER` seconds. When the current path goes silent while we are sending, every
candidate is probed again and the owner is asked to re-punch through the rendezvous.

**No aiming** (issue 12). The candidates of an introduction are chosen by the peer (its LAN list)
or by the rendezvous, so what a node probes because of one is bounded, and an attacker pays for
every round with bytes to the rendezvous:

- only candidates the policy accepts (`tunnel.path.candidates`), at most 8 per introduction; a new
  introduction replaces the candidates of the last one that never answered;
- each candidate is probed on a schedule that ends: every `PUNCH_INTERVAL` for `PUNCH_FAST_PROBES`
  probes (the NATs on both sides must see packets close together), then after the gaps of
  `PUNCH_BACKOFF`, then never again until the next introduction or silence re-arms it;
- a probe to an address that has not answered yet costs one of `PROBES_PER_INTRODUCTION` credits,
  which only an introduction restores (a silence re-arms the schedule, not the credit), and one
  token of the node's `ProbeBudget` shared by every peer. A node's probes per introduction thus
  stay below the bytes of the request that made the rendezvous introduce (the reflection ratio,
  datagrams per attacker byte, stays under 1);
- addresses that authenticated packets came from (the peer proved it is there) cost no credit:
  the path in use, and alternatives or a path lost to an outage, probed every
  `BACKGROUND_PROBE_INTERVAL` for `PROVEN_FOR` after the peer was last heard there.

Recovery from a path that is gone is the rendezvous's job, not endless probing: a peer without a
direct path asks for introductions again (`tunnel.node.peer`, `REPUNCH_*`), and every
introduction starts a fresh schedule on both sides.

The manager never sends anything itself: the node asks `probes_due(now)` which addresses to probe
and `may_send_initiation(addr, now)` whether a handshake initiation of the session may go to
`addr`, reports answers with `on_probe_answered` and every authenticated packet with
`on_authenticated`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from tunnel.addresses import Addr
from tunnel.path.candidates import CandidatePolicy
from tunnel.path.probebudget import ProbeBudget

# Protocol timing, in seconds, with the reasons.
# While punching: NATs on both sides must see outbound packets close together
PUNCH_INTERVAL: Final = 0.2
# Fast probes per candidate (2 s): both sides start within a round trip
PUNCH_FAST_PROBES: Final = 10
# Then a few slower probes, in case the other side started late (its introduction was lost and
# resent, its process was busy); the schedule ends 17 s after the introduction.
# The type spelled out: compiled, a bare-`Final` tuple of floats is never set (mypyc 1.x).
PUNCH_BACKOFF: Final[tuple[float, ...]] = (1.0, 2.0, 4.0, 8.0)
RELAY_FALLBACK_AFTER: Final = 5.0  # no direct path by then: use the relay (issue: "within 5 s")
# Addresses the peer answered from lately, other than the path in use, are probed this often:
# to keep alternatives' RTTs fresh, and to find a path again at once after an outage.
BACKGROUND_PROBE_INTERVAL: Final = 5.0
PROVEN_FOR: Final = 600.0  # ... for this long after the last authenticated packet from there
CANDIDATE_TIMEOUT: Final = 15.0  # a path with no authenticated packet for this long is not working
# Sending but hearing nothing this long: the path (NAT mapping) is gone
SILENCE_TIMEOUT: Final = 3.0
# Switch between direct paths of one kind only for a clearly lower RTT
RTT_SWITCH_RATIO: Final = 0.7
# The peer's data arrives from another address while the path in use has been quiet this long:
# the peer moved (it restarted on a new port, or its NAT gave it a new mapping). Follow it, as
# WireGuard follows the source of the latest authenticated packet.
ROAM_AFTER: Final = 1.0

# Implementation limits.
# Probe datagrams to unanswered addresses per introduction: a full schedule for the usual 2
# candidates (2 x 14) with room for the session's own initiation retransmissions, and fewer than
# the bytes of any request that makes the rendezvous introduce (a CONNECT is 174 bytes; no
# rendezvous message is shorter than 64).
PROBES_PER_INTRODUCTION: Final = 48
MAX_REFLEXIVE: Final = 8  # peer-reflexive candidates kept; the least recently heard goes first


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
    next_punch: float | None = None  # the next probe of its punching schedule; None: ended
    punches: int = 0  # probes of the schedule so far
    proven_at: float | None = None  # latest authenticated packet from here; silence keeps it

    def working(self, now: float) -> bool:
        return self.last_heard is not None and now - self.last_heard < CANDIDATE_TIMEOUT

    @property
    def answered(self) -> bool:
        """An authenticated packet came from here (and no silence since): the peer is there."""
        return self.last_heard is not None

    def proven(self, now: float) -> bool:
        """The peer answered from here lately: probing it aims at nobody else."""
        return self.proven_at is not None and now - self.proven_at < PROVEN_FOR

    def arm(self, now: float) -> None:
        """Start the punching schedule afresh."""
        self.next_punch, self.punches = now, 0

    def punched(self, now: float) -> None:
        """One probe of the schedule is done: when the next is due, if any."""
        self.punches += 1
        if self.punches < PUNCH_FAST_PROBES:
            self.next_punch = now + PUNCH_INTERVAL
        elif self.punches - PUNCH_FAST_PROBES < len(PUNCH_BACKOFF):
            self.next_punch = now + PUNCH_BACKOFF[self.punches - PUNCH_FAST_PROBES]
        else:
            self.next_punch = None


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
    """Candidate paths to one peer and the choice among them. All times are `now` seconds.

    `budget` is the node's shared `ProbeBudget`; `policy` its `CandidatePolicy`."""

    started: float
    relay_allowed: bool = True
    policy: CandidatePolicy = field(default_factory=CandidatePolicy)
    budget: ProbeBudget = field(default_factory=ProbeBudget)
    candidates: dict[Addr, Candidate] = field(default_factory=dict)
    path: Path | None = None
    credit: int = 0  # probes to unanswered addresses left until the next introduction
    next_background: float = 0.0
    awaiting_since: float | None = None  # first send not yet followed by any authenticated packet
    last_heard: float | None = None
    relay_heard: float | None = None
    _events: list[PathEvent] = field(default_factory=list)

    # Inputs ---------------------------------------------------------------------------------

    def introduce(self, public: Addr, lan: Iterable[Addr], now: float) -> None:
        """The rendezvous sent the peer's candidates: they replace those of the last
        introduction that never answered, and punching starts with a fresh credit."""
        kept_public, kept_lan = self.policy.introduced(public, lan)
        announced = [(addr, Kind.LAN) for addr in kept_lan]
        if kept_public is not None:
            announced.insert(0, (kept_public, Kind.PUBLIC))
        fresh = {addr for addr, _ in announced}
        in_use = self.path.addr if self.path is not None else None
        for addr, candidate in list(self.candidates.items()):
            if addr not in fresh and addr != in_use and not candidate.working(now):
                del self.candidates[addr]
        for addr, kind in announced:
            known = self.candidates.get(addr)
            if known is None:
                known = self.candidates[addr] = Candidate(addr, kind)
            elif kind < known.kind:
                known.kind = kind
            known.arm(now)
        self.credit = PROBES_PER_INTRODUCTION

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
                self._make_room_for_reflexive()
                candidate = self.candidates[addr] = Candidate(addr, Kind.REFLEXIVE)
            was_working = candidate.last_heard is not None and candidate.working(now)
            candidate.last_heard = candidate.proven_at = now
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
        """Addresses to probe now: candidates whose schedule is due, within the credit and the
        node's budget, and every `BACKGROUND_PROBE_INTERVAL` the addresses the peer answered
        from lately, except the path in use."""
        background = now >= self.next_background
        if background:
            self.next_background = now + BACKGROUND_PROBE_INTERVAL
        else:
            # Asked at every flush of the peer (a hot path): without a background round only a
            # candidate whose punch is due gets a probe, so most calls end here, unsorted.
            for candidate in self.candidates.values():
                if candidate.next_punch is not None and now >= candidate.next_punch:
                    break
            else:
                return []
        in_use = self.path.addr if self.path is not None else None
        on_lan = self.path is not None and self.path.kind == Kind.LAN
        due = []
        # Answered candidates first (they cost nothing), then the public endpoint, which the
        # rendezvous saw the peer use, before the LAN addresses the peer only claims.
        for candidate in sorted(self.candidates.values(), key=_probe_order):
            if candidate.next_punch is not None and now >= candidate.next_punch:
                candidate.punched(now)
                if not self._charge(candidate, now):
                    continue
            elif not (background and not on_lan and candidate.addr != in_use
                      and candidate.proven(now) and self._charge(candidate, now)):
                continue  # nothing beats a LAN path; the path in use is checked by its traffic
            candidate.probes_sent += 1
            due.append(candidate.addr)
        return due

    def may_send_initiation(self, addr: Addr, now: float) -> bool:
        """Whether a handshake initiation of the session may go to `addr` now: an address that
        answered, or a candidate still punching (charged like a probe). The session keeps every
        address it was ever given and retransmits to all of them; this keeps it to the same
        bounds as the probes."""
        candidate = self.candidates.get(addr)
        if candidate is None:
            return False
        if candidate.next_punch is None and not candidate.proven(now):
            return False
        return self._charge(candidate, now)

    def use_relay(self, now: float) -> bool:
        """Whether packets should go through the relay now (no direct path, fallback time over)."""
        return (
            self.relay_allowed
            and (self.path is None or not self.path.direct)
            and now - self.started >= RELAY_FALLBACK_AFTER
        )

    def get_timer(self) -> float:
        # Asked after every flush of the peer (a hot path): one pass, nothing built.
        path = self.path
        in_use = path.addr if path is not None else None
        background = path is None or path.kind != Kind.LAN  # nothing beats a LAN path
        alternative = False  # the peer answered lately from somewhere else than the path
        deadline = math.inf
        for candidate in self.candidates.values():
            punch = candidate.next_punch
            if punch is not None and punch < deadline:
                deadline = punch
            if background and candidate.proven_at is not None and candidate.addr != in_use:
                alternative = True
        if alternative and self.next_background < deadline:
            deadline = self.next_background
        if path is not None:
            if path.direct and self.awaiting_since is not None:
                deadline = min(deadline, self._silence_deadline())
        elif self.relay_allowed:
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
            return math.inf  # nothing outstanding: silence means nothing
        return self.awaiting_since + SILENCE_TIMEOUT

    def _path_went_silent(self, now: float) -> None:
        assert self.path is not None and self.path.addr is not None
        stale = self.candidates.get(self.path.addr)
        if stale is not None:
            stale.last_heard = None
        self.awaiting_since = None
        for candidate in self.candidates.values():
            candidate.arm(now)  # within what is left of the introduction's credit
        self._events.append(RepunchNeeded())

    def _charge(self, candidate: Candidate, now: float) -> bool:
        """Pay for one datagram to `candidate`: free where the peer answers, a token of the
        node's budget where it answered lately, else also one credit of the introduction."""
        if candidate.answered:
            return True
        if candidate.proven(now):
            return self.budget.take(now)
        if self.credit <= 0 or not self.budget.take(now):
            return False
        self.credit -= 1
        return True

    def _make_room_for_reflexive(self) -> None:
        reflexive = [c for c in self.candidates.values() if c.kind == Kind.REFLEXIVE
                     and (self.path is None or c.addr != self.path.addr)]
        if len(reflexive) >= MAX_REFLEXIVE:
            oldest = min(reflexive, key=lambda c: c.last_heard or float("-inf"))
            del self.candidates[oldest.addr]

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


def _probe_order(candidate: Candidate) -> tuple[bool, bool, Kind]:
    return (not candidate.answered, candidate.kind != Kind.PUBLIC, candidate.kind)
