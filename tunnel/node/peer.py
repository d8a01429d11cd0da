"""One remote node as this node sees it: path choice, datagram size, port prediction, the channel
and its incarnations, path pings (sans-IO).

The node shell owns the sockets and the secure sessions; a `Peer` owns every per-peer decision.
It follows the one interface of the project's state machines: inputs are calls with `now`
(`receive`, `on_handshake_completed`, `on_session_lost`, `on_introduced`, `handle_timer`, and
`poll`, which runs what is due); outputs are drained by the shell:

- `datagrams_to_send(now)`: `(payload, addr)` pairs to seal in this peer's session and send;
  `addr` may be a pseudo address (`tunnel.addresses`);
- `next_event()`: what the shell must do for the peer (`PeerEvent`): start a handshake, ask
  the rendezvous for something, open or release port-prediction sockets, tell listeners;
- `next_channel_event()`: the channel's events for the forwarder, plus the close of a channel
  this peer replaced;
- `get_timer()`: the earliest deadline of everything above.

**Transport parameters.** The channel receives within this node's own limits (`params`) and
sends within the peer's, which its handshake announced (`session_params`, read from the session
whenever a channel opens): first credits, the streams it may open, the largest datagram it reads.

**Incarnations.** Every channel packet carries the sender's incarnation (random per channel) and
the one it believes the receiver has, so a peer that restarted is noticed at once and packets of
a dead channel never reach a new one. A node that stops closes its channel with NODE_STOPPING:
its peer then waits for it on a new session rather than opening a channel on the old one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from tunnel.addresses import Addr, format_endpoint, is_relay, relay_addr
from tunnel.channel.channel import Channel
from tunnel.channel.constants import NO_ERROR
from tunnel.channel.events import ChannelClosed, ChannelEvent
from tunnel.keys.netkeys import fingerprint
from tunnel.node import payloads as nw
from tunnel.node.pathlog import path_change, peer_label
from tunnel.path.manager import Kind, PathChanged, PathManager, RepunchNeeded
from tunnel.path.pmtu import PathMtu
from tunnel.path.prediction import COOLDOWN as PREDICTION_COOLDOWN
from tunnel.path.prediction import RETRY_MAX as PREDICTION_RETRY_MAX
from tunnel.path.prediction import SOCKETS, Opener, Prober
from tunnel.session.params import TransportParams
from tunnel.session.wire import TRANSPORT_OVERHEAD, Payload

log = logging.getLogger(__name__)

CHANNEL_HEADER: Final = 9  # payload type (1) + sender incarnation (4) + receiver incarnation (4)
CHANNEL_TYPE: Final = bytes((nw.PAYLOAD_CHANNEL,))  # its first byte, built once, not per packet
# RELAY_TO envelope: type (1) + grant id (16) + tag (16); RELAY_FROM's too
RELAY_OVERHEAD: Final = 33
NO_INCARNATION: Final = bytes(4)  # "I do not know yours yet"
MAX_PENDING_PINGS: Final = 64  # unanswered pings of dead paths are forgotten past this
# A channel packet for an incarnation of ours that is gone (we restarted) is answered with a bare
# channel header, at most this often, so the peer learns our new incarnation and resets its side.
ANNOUNCE_INTERVAL: Final = 1.0
MAX_RETIRED: Final = 8  # the peer's replaced incarnations remembered, to drop their late packets
# Seconds without an authenticated packet, while reconnecting: unreachable
UNREACHABLE_AFTER: Final = 30.0
# s: how long a port-prediction request waits for the introduction that allows an answer (the
# rendezvous sends both sides theirs at once; a few seconds cover a lost one's retry).
REQUEST_WAIT: Final = 10.0
# Without a direct path, ask the rendezvous to introduce us again (the peer's NAT may have
# rebooted onto new ports): after this long, then doubling up to the cap (seconds).
REPUNCH_FIRST: Final = 3.0
REPUNCH_MAX: Final = 60.0


_DEFAULT_PARAMS: Final = TransportParams()


def _no_params() -> TransportParams | None:
    return None


def channel_budget(datagram_size: int, relayed: bool) -> int:
    """Largest channel packet that fits a UDP payload of `datagram_size` on this path."""
    return datagram_size - TRANSPORT_OVERHEAD - CHANNEL_HEADER - (RELAY_OVERHEAD if relayed else 0)


# --- what the shell must do for a peer -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeWanted:
    """Start (or widen) a handshake toward `addrs`; `resend` the pending initiation to them."""

    addrs: list[Addr]
    resend: bool


@dataclass(frozen=True, slots=True)
class RegistrationWanted:
    """Register at the rendezvous again now: our own NAT may have moved us."""


@dataclass(frozen=True, slots=True)
class IntroductionWanted:
    """Ask the rendezvous to introduce us to `name` again (fresh candidates on both sides)."""

    name: str


@dataclass(frozen=True, slots=True)
class SocketsWanted:
    """Port prediction: open `count` extra sockets toward `target`; answer `sockets_opened`."""

    target: Addr
    count: int


@dataclass(frozen=True, slots=True)
class SocketsReleased:
    """Port prediction is over: close its sockets, except the one `keep` runs through."""

    keep: Addr | None


@dataclass(frozen=True, slots=True)
class PeerChanged:
    """Path, channel or readiness changed: the shell tells whoever listens."""


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The answer to ping `txid`, after `rtt` seconds, over `addr`."""

    txid: bytes
    rtt: float
    addr: Addr


PeerEvent = (HandshakeWanted | RegistrationWanted | IntroductionWanted | SocketsWanted
             | SocketsReleased | PeerChanged | PongReceived)


@dataclass(slots=True)
class _PingSent:
    sent_at: float
    to: Addr
    size: int


@dataclass
class Peer:
    """Everything about one peer: name, paths, channel, port prediction (sans-IO)."""

    static: bytes
    path: PathManager
    is_client: bool  # the channel's role: the node with the lower static key is the client
    congestion: str = "bbr"
    rng: Callable[[int], bytes] = os.urandom
    # Ours: what this node's channels accept (sent to the peer in every handshake).
    params: TransportParams = field(default_factory=TransportParams)
    # The peer's, from the session's keys in use (the shell's lookup; None before a handshake).
    session_params: Callable[[], TransportParams | None] = _no_params
    # The name we asked the rendezvous for: connections of ours go to this peer and wait for it.
    # None for a node that reached us (as a connecting node reaches an exposing one): key alone.
    name: str | None = None
    channel: Channel | None = None
    incarnation: bytes = b""
    peer_incarnation: bytes = NO_INCARNATION
    connected_at: float | None = None
    rtt: float | None = None
    mtu: PathMtu = field(default_factory=PathMtu)
    # Set by the shell from its netcheck: our NAT gives every destination a fresh port.
    nat_randomizes: bool = False
    # Port prediction (tunnel.path.prediction), our NAT randomizing: when the next attempt may
    # start (none runs before the cooldown the other side keeps), and how long to wait after one
    # that found nothing (doubling, so a NAT it never works through is not sprayed for ever).
    prediction_next: float = 0.0
    prediction_retry: float = PREDICTION_COOLDOWN
    prediction_wake: float | None = None  # a timer for `prediction_next`, fired once
    opener: Opener | None = None
    prediction_targets: list[Addr] = field(default_factory=list)
    prober: Prober | None = None
    # The other side of a prediction: one attempt per introduction, at most one per COOLDOWN;
    # a request that came before its introduction waits for it (`REQUEST_WAIT`).
    prediction_allowed: bool = False
    prediction_requested: float | None = None
    last_prediction: float = float("-inf")
    relay_candidate: bool = False
    reconnecting_since: float | None = None  # the path went silent or the session was lost
    refused: str | None = None  # why the peer's handshakes are refused (an old version)
    closed: bool = False  # stopped: the channel's CLOSE goes out, nothing else is asked
    # The peer's node said it is stopping (its channel's CLOSE): it is awaited on a new session.
    stopping_noticed: bool = False
    _announce_due: bool = False  # tell the peer our incarnation with a bare channel header
    _retired: list[bytes] = field(default_factory=list)  # the peer's replaced incarnations
    _replaced: bytes = b""  # our incarnation before the current channel's (`_pairs`)
    _paired: bytes = b""  # the peer's channel that ours paired with (`_pairs`)
    _last_announce: float = float("-inf")
    repunch_at: float = 0.0
    repunch_interval: float = REPUNCH_FIRST
    # Listener slots the shell fills; the Peer itself never calls them.
    on_event: Callable[[Peer, ChannelEvent], None] | None = None
    on_change: list[Callable[[Peer], None]] = field(default_factory=list)
    _pings: dict[bytes, _PingSent] = field(default_factory=dict)
    _out: list[tuple[Payload, Addr]] = field(default_factory=list)
    _events: list[PeerEvent] = field(default_factory=list)
    _channel_events: list[ChannelEvent] = field(default_factory=list)

    # --- state --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.channel is not None and self.channel.is_open and self.path.path is not None

    @property
    def direct(self) -> bool:
        path = self.path.path
        return path is not None and path.direct

    @property
    def peer_params(self) -> TransportParams:
        """The limits the peer announced in its handshake (the defaults before one)."""
        return self.session_params() or _DEFAULT_PARAMS

    def send_addr(self) -> Addr | None:
        """Where packets for this peer go now: the direct path, the relay, or nowhere yet."""
        path = self.path.path
        if path is None:
            return None
        return path.addr if path.direct and path.addr is not None else relay_addr(self.static)

    # --- inputs -------------------------------------------------------------------------------

    def on_handshake_completed(self, addr: Addr, now: float) -> None:
        self.refused = None
        self.path.on_authenticated(None if is_relay(addr) else addr, now)
        if (peer := self.session_params()) is not None:
            self.mtu.set_limit(peer.max_datagram)  # before any probe of the path
        if self.channel is None:
            self._open_channel(now)
        else:
            self._announce_due = True  # a new session may be a restarted peer's: say who we are
        self._events.append(PeerChanged())

    def on_session_lost(self, reason: str, now: float) -> None:
        """The session failed or expired: the channel on it is gone."""
        # A warning where connections of ours wait (`name`); a node that reached us and went (a
        # laptop closed, a client stopped) is routine: it comes back by itself if it wants to.
        log.log(logging.INFO if self.name is None else logging.WARNING, "lost %s: %s",
                peer_label(self.name, self.static), reason)
        if self.reconnecting_since is None:
            self.reconnecting_since = now
        if self.channel is not None and self.channel.is_open:
            self.channel.close(reason)
            self._channel_events.append(ChannelClosed(reason, 0, by_peer=False))
        self.channel = None
        self._events.append(PeerChanged())

    def on_refused(self, reason: str) -> None:
        """The session layer refused the peer's handshake (it runs an older version): say so in
        `status` until a handshake completes."""
        if self.refused != reason:
            self.refused = reason
            self._events.append(PeerChanged())

    def on_left(self, now: float) -> None:
        """The rendezvous says the peer left (a clean stop): wait for it to come back."""
        if self.reconnecting_since is None:
            self.reconnecting_since = now
            self._events.append(PeerChanged())

    def on_introduced(self, public: Addr, lan: list[Addr], name: str | None, now: float) -> None:
        """The rendezvous sent the peer's candidates; `name` when we asked for it by name.
        Only what the candidate policy accepts is probed, within the budget of one introduction
        (`tunnel.path.manager`); it also allows the peer one port prediction."""
        if name is not None:
            self.name = name
        self.path.introduce(public, lan, now)
        self.prediction_allowed = True

    def may_send_initiation(self, addr: Addr, now: float) -> bool:
        """Whether the session's handshake initiation may go to `addr`: through the relay to
        this peer, or where the path manager still punches or the peer answered."""
        if is_relay(addr):
            return addr == relay_addr(self.static)
        return self.path.may_send_initiation(addr, now)

    def receive(self, payload: bytes, addr: Addr, now: float) -> None:
        """An authenticated payload from this peer's session, received from `addr`."""
        if self.closed:
            return
        self.path.on_authenticated(None if is_relay(addr) else addr, now)
        if len(payload) >= CHANNEL_HEADER and payload[0] == nw.PAYLOAD_CHANNEL:
            self._receive_channel(payload, addr, now)
            return
        self._heard_outside_channel()
        if not payload:
            return  # a keepalive
        kind = payload[0]
        if kind == nw.PAYLOAD_PING and len(payload) >= 1 + nw.TXID_SIZE:
            # Padded pings probe the path's datagram size; the answer is small either way.
            txid = payload[1 : 1 + nw.TXID_SIZE]
            self._out.append((nw.encode_ping(nw.PAYLOAD_PONG, txid), addr))
        elif kind == nw.PAYLOAD_PONG and len(payload) == 1 + nw.TXID_SIZE:
            self._receive_pong(payload[1:], now)
        elif kind == nw.PAYLOAD_PREDICTION:
            self._on_prediction_request(now)

    def receive_batch(self, payloads: list[bytes], addr: Addr, now: float) -> None:
        """What `receive` does for each of `payloads` in turn (a GRO buffer's, all from `addr`
        at `now`), at a channel packet's cost each instead of a payload's.

        Channel data of the incarnations in use, on the path in use, changes nothing of the
        path, the reconnection or the incarnations beyond what any authenticated packet from
        `addr` does, and that is the same for a whole batch (the same address at the same
        `now`). So while the peer is steady (channel open, not reconnecting, `addr` the path
        in use) the batch is authenticated to the path once and each payload only compared
        with the incarnations in use: the hot path of bulk data (~40 payloads a buffer at
        100 MB/s) and of a lone message alike. Otherwise the first payload takes `receive`,
        which may make the peer steady for the rest; anything else takes `receive` too.
        """
        if not payloads:
            return
        first = 0
        if self._steady(addr):
            self.path.on_authenticated(None if is_relay(addr) else addr, now)
        else:
            self.receive(payloads[0], addr, now)
            first = 1
        if first == len(payloads):
            return
        channel = self.channel
        if channel is None or not self._steady(addr):  # the path changed meanwhile
            for payload in payloads[first:]:
                self.receive(payload, addr, now)
            return
        current = CHANNEL_TYPE + self.peer_incarnation + self.incarnation
        for index in range(first, len(payloads)):
            payload = payloads[index]
            if len(payload) > CHANNEL_HEADER and payload.startswith(current):
                channel.receive_packet(payload, now, CHANNEL_HEADER)
            else:  # a ping, a bare header, another incarnation: the whole way, and so the rest
                for rest in payloads[index:]:
                    self.receive(rest, addr, now)
                return

    def _heard_outside_channel(self) -> None:
        """An authenticated packet other than the channel's came. While reconnecting with the
        channel open, it does not tell whether the peer is the process of that channel or a
        successor of one that crashed (both answer probes): were it counted as back, a local
        connection waiting meanwhile would take a stream on a dead process's channel, reset a
        moment later. A PING on the channel asks; its answer, or the successor's announce, is
        a channel packet (`_receive_channel`)."""
        channel = self.channel
        if self.reconnecting_since is not None and channel is not None and channel.is_open:
            channel.ping()
        else:
            self._back()

    def _back(self) -> None:
        """An authenticated packet came while reconnecting: the peer is back, unless its node
        said it is stopping (what still comes from that one is its last words)."""
        if (self.reconnecting_since is not None and self.path.path is not None
                and not self.stopping_noticed):
            log.info("%s is back: %s", peer_label(self.name, self.static), self.describe_path())
            self.reconnecting_since = None
            self._events.append(PeerChanged())

    def _steady(self, addr: Addr) -> bool:
        """Open channel, not reconnecting, and `addr` the path in use (see `receive_batch`)."""
        path = self.path.path
        return (not self.closed and self.channel is not None and self.reconnecting_since is None
                and path is not None and (path.addr == addr if path.direct else is_relay(addr)))

    def _receive_channel(self, payload: bytes, addr: Addr, now: float) -> None:
        sender, receiver = payload[1:5], payload[5:9]
        if receiver not in (self.incarnation, NO_INCARNATION) and not self._pairs(sender,
                                                                                 receiver):
            # Meant for a channel of ours that no longer exists (this process restarted, or
            # the peer missed our last announce): tell the peer who we are now.
            if now - self._last_announce >= ANNOUNCE_INTERVAL:
                self._announce_due = True
            return
        if sender in self._retired:
            return  # a late packet of a channel the peer has already replaced
        if self.channel is None:
            self._open_channel(now)  # keys confirmed by this very packet
            self._events.append(PeerChanged())
        restarted = self.peer_incarnation not in (sender, NO_INCARNATION)
        if sender != self.peer_incarnation:
            # A new channel that names one of ours was made by a process that knew us: the
            # peer replaced a dead channel, it did not start afresh (a new process names none).
            self._peer_restarted(sender, now, pair=receiver != NO_INCARNATION
                                 and self._unheard_channel())
        if not is_relay(addr):
            # Follow the peer's data; a peer that restarted is never at its old address.
            self.path.on_data(addr, now, moved=restarted)
        # The channel says which process this is: the one that was lost, or (restarted) its
        # successor, whose new channel is open now. Either way a wait for the peer ends.
        self._back()
        if len(payload) > CHANNEL_HEADER:  # a bare header only announces an incarnation
            assert self.channel is not None
            self.channel.receive_packet(payload, now, CHANNEL_HEADER)

    def _receive_pong(self, txid: bytes, now: float) -> None:
        sent = self._pings.pop(txid, None)
        if sent is None:
            return
        rtt = now - sent.sent_at
        self.rtt = rtt
        if not is_relay(sent.to):
            self.path.on_probe_answered(sent.to, rtt, now)
        if sent.size and self.mtu.on_probe_answered(sent.size) and self.channel is not None:
            self.channel.set_max_packet_size(channel_budget(sent.size, relayed=False))
            log.info("path to %s carries %d-byte datagrams (PMTU probe answered)",
                     peer_label(self.name, self.static), sent.size)
        self._events.append(PongReceived(txid, rtt, sent.to))

    def sockets_opened(self, targets: list[Addr]) -> None:
        """The shell opened the sockets of `SocketsWanted`: the peer through each of them."""
        self.prediction_targets = targets

    def ping(self, now: float) -> bytes | None:
        """Ping the peer over the path in use; the txid of the `PongReceived` that will answer."""
        addr = self.send_addr()
        return None if addr is None else self._ping(addr, now)

    # --- time ---------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self.prediction_wake is not None and self.prediction_wake <= now:
            self.prediction_wake = None  # the poll that follows starts the attempt if it can
        if self.path.get_timer() <= now:
            self.path.handle_timer(now)
        channel = self.channel
        if channel is not None and (deadline := channel.get_timer()) is not None \
                and deadline <= now:
            channel.handle_timer(now)

    def get_timer(self) -> float | None:
        if self.closed:
            return None  # the node flushes the CLOSE at once and exits
        # Asked after every flush of the peer (a hot path): compared in place, nothing built.
        earliest = self.path.get_timer()
        for machine in (self.mtu, self.opener, self.prober, self.channel):
            if machine is not None and (deadline := machine.get_timer()) is not None \
                    and deadline < earliest:
                earliest = deadline
        if self.prediction_wake is not None and self.prediction_wake < earliest:
            earliest = self.prediction_wake
        if self.repunch_at < earliest and self.name is not None and not self.direct:
            earliest = self.repunch_at
        return earliest

    def close(self, reason: str, error_code: int = NO_ERROR) -> None:
        """Stop, in whatever state: the channel's CLOSE (with `error_code`) leaves with the next
        datagrams, port prediction ends, and the peer asks for nothing more."""
        self.closed = True
        self._events.clear()  # requests made before the stop no longer matter
        self._out.clear()
        if self.channel is not None and self.channel.is_open:
            self.channel.close(reason, error_code)
        if self.opener is not None:
            self.opener = None
            self.prediction_targets = []
            self._events.append(SocketsReleased(None))
        self.prober = None

    def poll(self, now: float, established: bool) -> None:
        """Run everything that is due; `established`: the session can carry data now."""
        if self.closed:
            return
        probes = self.path.probes_due(now)
        if probes:
            if established:
                for addr in probes:
                    self._ping(addr, now)
            else:
                # Punching: both sides send at once, so whichever initiation finds the other
                # NAT already open gets through.
                self._events.append(HandshakeWanted(probes, resend=True))
        if self.path.use_relay(now) and not established and not self.relay_candidate:
            self.relay_candidate = True
            log.info("no direct handshake with %s yet; trying one through the relay",
                     peer_label(self.name, self.static))
            self._events.append(HandshakeWanted([relay_addr(self.static)], resend=False))
        while (event := self.path.next_event()) is not None:
            if isinstance(event, RepunchNeeded):
                self._on_path_silent(now)
            elif isinstance(event, PathChanged):
                self._on_path_changed(event, now)
        if now >= self.repunch_at and self.name is not None and not self.direct:
            if self.repunch_at:
                self._events.append(IntroductionWanted(self.name))
            self.repunch_at = now + self.repunch_interval
            self.repunch_interval = min(self.repunch_interval * 2, REPUNCH_MAX)
        channel = self.channel
        if channel is not None and channel.peer_stopping and not self.stopping_noticed:
            self._peer_stopping(now)
        if established:
            if (channel is not None and channel.is_closed and self.path.path is not None
                    and self.reconnecting_since is None):
                # The old channel died (an outage outlasted it, or the peer closed it without
                # stopping) and the peer is heard (not reconnecting, which a stopping peer
                # is): start a new one; the announce tells the peer. Not before: a channel
                # opened toward a peer that died would idle out in turn, and say "open".
                self._open_channel(now)
                self._events.append(PeerChanged())
            self._drive_prediction(now)

    def _peer_stopping(self, now: float) -> None:
        """The peer's node closed the channel because it stops (`ptunnel` ended, a service
        restart): no new channel on this session, whose other end is exiting. The peer counts
        as reconnecting, so new local connections wait for it (not `ready`), and a restarted
        node's first packets open the next channel (`_peer_restarted`)."""
        self.stopping_noticed = True
        log.info("%s is stopping%s", peer_label(self.name, self.static),
                 "" if self.name is None else "; new connections wait for it to come back")
        if self.reconnecting_since is None:
            self.reconnecting_since = now
        self._events.append(PeerChanged())

    def _on_path_silent(self, now: float) -> None:
        log.info("path to %s went silent (data unanswered); punching again",
                 peer_label(self.name, self.static))
        if self.reconnecting_since is None:
            self.reconnecting_since = now
        self._events.append(RegistrationWanted())
        if self.name is not None:
            # The peer may have restarted on another port, or its NAT rebooted: fresh
            # candidates from the rendezvous, at once.
            self._events.append(IntroductionWanted(self.name))
        self.repunch_interval = REPUNCH_FIRST
        self.repunch_at = now + REPUNCH_FIRST
        self._events.append(PeerChanged())

    def _on_path_changed(self, event: PathChanged, now: float) -> None:
        log.info("path to %s: %s", peer_label(self.name, self.static),
                 path_change(event.old, event.new, self.path.report(now)))
        direct = event.new is not None and event.new.direct
        if direct:
            self.mtu.restart(now)  # a new path has proved nothing yet
        else:
            self.mtu.stop()
        if self.channel is not None:
            self.channel.set_max_packet_size(channel_budget(self.mtu.size, not direct))
        if event.new is not None:
            self.ping(now)
        self._events.append(PeerChanged())

    # --- outputs ------------------------------------------------------------------------------

    def next_event(self) -> PeerEvent | None:
        return self._events.pop(0) if self._events else None

    @property
    def replaced_channel(self) -> bool:
        """A channel of this peer ended (restart, lost session) and its close is not yet
        delivered: the shell delivers it before anything else can touch the new channel."""
        return bool(self._channel_events)

    def next_channel_event(self) -> ChannelEvent | None:
        if self._channel_events:
            return self._channel_events.pop(0)
        return self.channel.next_event() if self.channel is not None else None

    def datagrams_to_send(self, now: float, established: bool) -> list[tuple[Payload, Addr]]:
        """Payloads to seal and where to send them: queued pings and pongs, then the channel's
        packets over the path in use (only once the session can carry them)."""
        out, self._out = self._out, []
        path = self.path.path
        if path is None or not established or self.channel is None:
            return out
        direct = path.direct
        addr = path.addr if direct and path.addr is not None else relay_addr(self.static)
        if self._announce_due:
            self._announce_due = False
            self._last_announce = now
            out.append((CHANNEL_TYPE + self.incarnation + self.peer_incarnation,
                        addr))
        if direct and not self.closed and (probe := self.mtu.probe_due(now)) is not None:
            log.debug("path to %s: PMTU probe of %d bytes", peer_label(self.name, self.static),
                      probe)
            self._ping(addr, now, size=probe)
            out += self._out
            self._out = []
        header = CHANNEL_TYPE + self.incarnation + self.peer_incarnation
        if self.channel.packet_prefix != header:
            self.channel.packet_prefix = header  # the channel builds each packet behind it
        packets = self.channel.packet_parts_to_send(now)  # sealed from their parts, not joined
        if packets:
            out += [(packet, addr) for packet in packets]
            if self.channel.bytes_in_flight:
                # Only packets the peer must acknowledge count toward silence: a path is dead
                # when what needs an answer gets none, never because both sides are quiet.
                self.path.on_sent(now)
        return out

    # --- channel ------------------------------------------------------------------------------

    def _open_channel(self, now: float, keep_incarnation: bool = False) -> None:
        own = self.params
        # Read at every open: a peer that restarted may have come back with other limits.
        peer = self.peer_params
        self.mtu.set_limit(peer.max_datagram)
        self.stopping_noticed = False
        self.channel = Channel(
            is_client=self.is_client,
            max_packet_size=channel_budget(self.mtu.size, not self.direct),
            congestion=self.congestion,
            peer=fingerprint(self.static),
            stream_window=own.stream_window,
            connection_window=own.connection_window,
            max_streams=own.max_streams,
            peer_stream_window=peer.stream_window,
            peer_connection_window=peer.connection_window,
            peer_max_streams=peer.max_streams,
            opened_at=now,
        )
        self._paired = b""
        if not (keep_incarnation and self.incarnation):
            self._replaced = self.incarnation
            self.incarnation = self.rng(4)
        self.connected_at = now
        self._announce_due = True  # the peer learns the new incarnation without waiting for data
        log.info("channel open with %s", peer_label(self.name, self.static))

    def _peer_restarted(self, incarnation: bytes, now: float, pair: bool = False) -> None:
        """The peer's channel has a new incarnation: it restarted, or replaced a channel that
        died. Its old streams are gone, so ours end too, on a fresh channel that keeps our own
        incarnation: the peer's new channel already addresses us by it, and a new one would make
        the peer reset in turn, and so on for ever."""
        old = self.peer_incarnation
        if old != NO_INCARNATION:
            self._retired = [*self._retired[-(MAX_RETIRED - 1):], old]
            if pair:
                self._paired = incarnation
                # Both sides replaced a dead channel, and ours has heard nothing from the peer:
                # the two fresh channels pair as they are. What ours sent (a stream of a local
                # connection made meanwhile) named the peer's old channel, which the peer had
                # given up before it could take it, and goes again to the new one. Never with
                # a new process: its predecessor may have taken that stream and died before
                # answering, and the stream's first bytes would reach the service twice.
                log.info("peer %s replaced its channel as this node did: pairing the new ones",
                         peer_label(self.name, self.static))
            elif self.channel is not None:
                log.info("peer %s restarted or replaced its channel: resetting its streams",
                         peer_label(self.name, self.static))
                self._channel_events.append(ChannelClosed("peer restarted", 0, by_peer=True))
                self._open_channel(now, keep_incarnation=True)
        self.peer_incarnation = incarnation

    def _pairs(self, sender: bytes, receiver: bytes) -> bool:
        """Whether a packet that names our replaced channel belongs to the current one: both
        sides replaced a channel that died at about the same time (an outage or a sleep that
        outlasted both idle timeouts), and the peer's new channel (`sender`) names our old one.
        Told "who we are now", each side would drop the other's packets, and the first to hear
        the other would reset a connection made meanwhile. So the new channels pair
        (`_peer_restarted`): when ours has heard nothing yet and `sender` is a channel of the
        peer's we have not seen, or it is the one ours paired with, which goes on naming our
        old channel until our announce reaches it (its first data may be on the way already).
        Never the peer's old channel (the one `receiver` was meant for): what it sent while we
        slept is late, not new."""
        if receiver != self._replaced:
            return False
        if sender == self._paired:
            return True
        return (self._unheard_channel() and sender != self.peer_incarnation
                and sender not in self._retired)

    def _unheard_channel(self) -> bool:
        """Our channel is open and has received no packet from the peer yet."""
        channel = self.channel
        return channel is not None and channel.is_open and not channel.heard

    # --- pings and port prediction -------------------------------------------------------------

    def _ping(self, addr: Addr, now: float, size: int = 0) -> bytes:
        """Queue a path ping; with `size`, padded to a `size`-byte datagram to probe the MTU."""
        txid = self.rng(nw.TXID_SIZE)
        if len(self._pings) > MAX_PENDING_PINGS:
            self._pings.clear()
        self._pings[txid] = _PingSent(now, addr, size)
        payload = nw.encode_ping(nw.PAYLOAD_PING, txid)
        if size:
            payload += bytes(size - TRANSPORT_OVERHEAD - len(payload))
        self._out.append((payload, addr))
        return txid

    def _peer_public(self) -> Addr | None:
        """The peer's public endpoint as the rendezvous saw it."""
        for candidate in self.path.candidates.values():
            if candidate.kind == Kind.PUBLIC:
                return candidate.addr
        return None

    def _drive_prediction(self, now: float) -> None:
        """Port prediction on either side: open and refresh sockets, or probe, until it works."""
        if self.opener is None and self.prober is None and self.prediction_requested is None \
                and (not self.nat_randomizes or now < self.prediction_next):
            return  # none running and none to start (every flush of the peer asks)
        direct = self.direct
        if (self.nat_randomizes and self.opener is None and now >= self.prediction_next
                and self.path.path is not None and not direct
                and (public := self._peer_public()) is not None):
            self.opener = Opener(now)
            self.prediction_next = math.inf  # set again when this attempt ends
            self._events.append(SocketsWanted(public, SOCKETS))
            log.info("our NAT randomizes ports: opening %d sockets toward %s, asking %s to probe "
                     "them", SOCKETS, format_endpoint(public), fingerprint(self.static))
        if self.opener is not None:
            if direct or self.opener.expired(now):
                self._end_opener(now)
            else:
                if self.opener.request_due(now):
                    self._out.append((bytes((nw.PAYLOAD_PREDICTION,)), relay_addr(self.static)))
                if self.prediction_targets and self.opener.send_due(now):
                    for target in self.prediction_targets:
                        if self.path.budget.take(now):
                            self._ping(target, now)
        if self.prober is None and self.prediction_requested is not None:
            self._start_prober(now)
        if self.prober is not None:
            if direct:
                self.prober.stop()
            for addr in self.prober.due(now):
                if self.path.budget.take(now):  # the spray counts against the node's budget
                    self._ping(addr, now)
            if self.prober.stopped:
                log.info("port prediction toward %s ended after %d pings (%s)",
                         fingerprint(self.static), self.prober.sent,
                         "direct path found" if direct else "no port answered")
                self.prober = None

    def _on_prediction_request(self, now: float) -> None:
        """The peer's NAT randomizes ports and it opened sockets to us: guess its ports, now or
        once the introduction that allows it arrives."""
        if self.prober is None:
            self.prediction_requested = now
            self._start_prober(now)

    def _start_prober(self, now: float) -> None:
        requested = self.prediction_requested
        assert requested is not None
        public = self._peer_public()
        if self.nat_randomizes or self.direct or now - requested > REQUEST_WAIT:
            self.prediction_requested = None  # both randomize (no chance), or no longer needed
            return
        if public is None or not self.prediction_allowed:
            return  # not introduced yet: wait for it
        if now - self.last_prediction < PREDICTION_COOLDOWN:
            # Each attempt sprays up to 1,750 pings: one per introduction (which the peer pays
            # for with a request to the rendezvous) and at most one per cooldown.
            log.debug("port prediction request from %s ignored: one per introduction and "
                      "per %.0f s", fingerprint(self.static), PREDICTION_COOLDOWN)
            self.prediction_requested = None
            return
        self.prediction_requested = None
        self.prediction_allowed = False
        self.last_prediction = now
        self.prober = Prober(public[0], now, self.rng)
        log.info("probing random ports of %s for %s (port prediction)", public[0],
                 fingerprint(self.static))

    def _end_opener(self, now: float) -> None:
        path = self.path.path
        winner = path.addr if path is not None and path.direct else None
        keep = winner if winner in self.prediction_targets else None
        if keep is not None:
            log.info("port prediction to %s succeeded through %s", fingerprint(self.static),
                     format_endpoint(keep))
        if winner is not None:
            # Direct (through a prediction socket or not): should it be lost, a new attempt may
            # start once the other side's cooldown is over.
            self.prediction_retry = PREDICTION_COOLDOWN
            wait = PREDICTION_COOLDOWN
        else:
            wait = self.prediction_retry
            log.info("port prediction to %s found no open port; trying again in %.0f s",
                     fingerprint(self.static), wait)
            self.prediction_retry = min(wait * 2, PREDICTION_RETRY_MAX)
        self.prediction_next = self.prediction_wake = now + wait
        self._events.append(SocketsReleased(keep))
        self.prediction_targets = [keep] if keep is not None else []
        self.opener = None

    # --- reporting ----------------------------------------------------------------------------

    def state(self, now: float) -> str:
        """`connecting`, `direct`, `relay`, `reconnecting since …`, `unreachable (…)` or
        `refused: …` (it runs an older ptunnel): a path is up only while authenticated packets
        arrive on it."""
        path = self.path.path
        if self.refused is not None and (self.channel is None or not self.channel.is_open):
            return f"refused: {self.refused}"
        if self.reconnecting_since is not None:
            heard = self.path.last_heard
            if heard is not None and now - heard >= UNREACHABLE_AFTER:
                return f"unreachable (last heard {now - heard:.0f} s ago)"
            return f"reconnecting since {now - self.reconnecting_since:.0f} s ago"
        if path is None or self.channel is None or not self.channel.is_open:
            return "connecting"
        return "direct" if path.direct else "relay"

    def describe_path(self) -> str:
        path = self.path.path
        if path is None:
            return "no path"
        rtt = f", rtt {self.rtt * 1e3:.1f} ms" if self.rtt is not None else ""
        if not path.direct:
            return f"relay via rendezvous{rtt}"
        assert path.addr is not None
        return f"direct {path.kind.name.lower()} {format_endpoint(path.addr)}{rtt}"

    def status(self, now: float) -> dict[str, Any]:
        """This peer for `ptunnel status`, `ping --json` and the API's stats."""
        stats = self.channel.stats() if self.channel is not None else None
        return {
            "name": self.name,
            "fingerprint": fingerprint(self.static),
            "state": self.state(now),
            "path": self.describe_path(),
            "direct": self.direct,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1e3, 3),
            "bytes_sent": stats.stream_bytes_sent if stats else 0,
            "bytes_received": stats.stream_bytes_received if stats else 0,
            "open_streams": stats.open_streams if stats else 0,
            # how the channel copes with the path: loss, repairs and what recovery measured
            "channel": None if stats is None else {
                "packets_sent": stats.packets_sent,
                "packets_received": stats.packets_received,
                "packets_lost": stats.packets_lost,
                "retransmitted_bytes": stats.retransmitted_bytes,
                "smoothed_rtt_ms": round(stats.smoothed_rtt * 1e3, 3),
                "cwnd": stats.cwnd,
            },
            "connected_for_s": None if self.connected_at is None
            else round(now - self.connected_at, 1),
            "candidates": [
                {"addr": format_endpoint(r.addr), "kind": r.kind, "probes": r.probes_sent,
                 "working": r.working, "rtt_ms": r.rtt_ms}
                for r in self.path.report(now)
            ],
        }

