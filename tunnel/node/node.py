"""A running node: one UDP socket shared by the secure sessions, the rendezvous client and every
`Peer` (tunnel.node.peer). This is the asyncio shell around the sans-IO machines: it routes bytes
and time to them and does what they ask; every per-peer decision lives in `Peer`.

Everything that arrives (a datagram, a timer, a local TCP write) only feeds a machine and asks for
a *flush*; one flush then drains the machines that have work and re-arms the single timer. That
batches work per event instead of per packet:

- a readiness event of the socket is one drain (`UdpEndpoint`), then one flush in the same
  callback (`_on_drained`), which writes what arrived to the local sockets first; a timer is one
  flush; a local read sends in its own callback (`flush_now`: the packets first, then, if the
  read was the only input since the last flush, only the peer's timer; else a full flush);
  anything else asks with `kick()` for one flush at the end of the event-loop turn;
- a flush touches only the peers that have work: those a datagram arrived for, whose deadline came
  (peer deadlines live in one heap, `tunnel.timerheap`, as the device's sessions do), or that a
  forwarder kicked by name (`kick(peer)`); a bare `kick()` still drains them all. So a node with
  thousands of peers pays for the few that are busy, not for all of them, on every packet;
- a peer's payloads are sealed in runs (`Session.seal_batch`) that go out as one GSO send each.

Bounds (issue 12): at most `max_peers` links (peers), the same number as sessions; a link the
node did not ask for by name goes with its session when that is removed for idleness. Initiation
timestamps of the session layer are saved under the state directory (`replayfile`), so a
captured initiation cannot be replayed after a restart either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rendezvous import protocol as rp
from tunnel.addresses import Addr, format_endpoint, is_relay, relay_addr, relay_peer
from tunnel.channel.constants import NODE_STOPPING
from tunnel.channel.events import ChannelClosed
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import fingerprint, handshake_psk
from tunnel.node.ciphers import local_ciphers
from tunnel.node.netcheck import family, netcheck
from tunnel.node.pathlog import address_words, peer_label
from tunnel.node.peer import (
    HandshakeWanted,
    IntroductionWanted,
    Peer,
    PeerChanged,
    PeerEvent,
    PongReceived,
    RegistrationWanted,
    SocketsReleased,
    SocketsWanted,
)
from tunnel.node.prediction import PredictionSockets
from tunnel.node.replayfile import ReplayFile
from tunnel.node.udp import (
    MAX_GSO_BYTES,
    MAX_GSO_SEGMENTS,
    TIMER_EARLY,
    DatagramOut,
    Timer,
    UdpEndpoint,
    monotonic,
)
from tunnel.path import rendezvous as rc
from tunnel.path.candidates import CandidatePolicy
from tunnel.path.manager import PathManager
from tunnel.path.probebudget import ProbeBudget
from tunnel.session.constants import LIMIT_LOG_INTERVAL, MAX_SESSIONS
from tunnel.session.device import Device, SessionLimitReached
from tunnel.session.events import (
    HandshakeCompleted,
    HandshakeFailed,
    HandshakeRefused,
    SessionExpired,
    SessionRemoved,
)
from tunnel.session.params import TransportParams
from tunnel.session.session import Session, SessionConfig
from tunnel.session.wire import (
    SESSION_MESSAGE_TYPES,
    TRANSPORT_OVERHEAD,
    Payload,
    is_initiation,
    payload_size,
)
from tunnel.timerheap import TimerHeap

log = logging.getLogger(__name__)
# Per-datagram detail, for `-vv` only: the CLI keeps this logger at INFO otherwise, so `-v`
# shows events, not a line per packet.
packets: Final = logging.getLogger("ptunnel.packets")  # = tunnel.cli.logs.PACKETS_LOGGER

# Where a ping went missing (`Node.ping`, `ptunnel ping`): never sent for want of a session or
# of a path, or sent and not answered in time.
NO_SESSION: Final = "no_session"
NO_PATH: Final = "no_path"
NO_ANSWER: Final = "no_answer"

# s: a netcheck that got no answer from one of the rendezvous' two ports is run again after
# this long, doubling up to the cap, until it can tell how our NAT maps ports.
NETCHECK_RETRY_FIRST = 2.0
NETCHECK_RETRY_MAX: Final = 60.0


@dataclass
class NodeOptions:
    identity: Identity
    network_secret: bytes
    rendezvous: Addr
    rendezvous_key: bytes | None = None  # None: pinned from the server's first COOKIE
    # The deployment's other servers, tried in turn when the one in use stops answering.
    rendezvous_fallbacks: tuple[Addr, ...] = ()
    names: tuple[str, ...] = ()
    allow: list[bytes] | None = None
    bind: Addr = ("0.0.0.0", 0)
    keepalive: float = 25.0
    direct_only: bool = False
    congestion: str = "bbr"
    max_peers: int = MAX_SESSIONS  # links, and sessions of the device
    state_dir: Path | None = None  # where the initiation replay table is kept (None: memory)
    # What this node accepts (windows, streams, datagram size) and its transport ciphers; sent
    # to every peer in the handshake, which then sends within them.
    transport: TransportParams = field(
        default_factory=lambda: TransportParams(ciphers=local_ciphers()))


class Node:
    """The shell: feeds datagrams and timers into the machines and does what they ask."""

    def __init__(self, options: NodeOptions) -> None:
        self.options = options
        self.started = monotonic()
        self.device = Device(
            options.identity.private,
            handshake_psk(options.network_secret),
            allowed=options.allow,
            config=SessionConfig(persistent_keepalive=options.keepalive or None),
            max_sessions=options.max_peers,
            params=options.transport,
        )
        self.peers: dict[bytes, Peer] = {}
        # What peers may be probed at, and how much, all peers together (issue 12, no aiming).
        self.candidate_policy = CandidatePolicy.for_rendezvous(options.rendezvous)
        self.probe_budget = ProbeBudget()
        self._peer_timers: TimerHeap[bytes] = TimerHeap()  # peer static -> earliest deadline
        self._dirty: set[bytes] = set()  # peers with work for the next flush
        self._flush_all = False  # a bare kick(): every peer may have work
        self._delivering_to: bytes | None = None  # the peer whose channel events run now
        self._refusing_links_since = float("-inf")
        self._replay = None if options.state_dir is None else ReplayFile(options.state_dir)
        self.rdv: rc.RendezvousClient | None = None
        self.udp: DatagramOut | None = None
        self.public_endpoint: Addr | None = None
        self.nat_mapping = "unknown"  # how our NAT maps ports: `_check_nat`
        self._nat_check: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        # names, public endpoint, server: what the "registered" log line last said
        self._registered_as: tuple[tuple[str, ...], Addr, Addr] | None = None
        self.rdv_events: list[Callable[[rc.Event], None]] = []
        self.on_new_peer: Callable[[Peer], None] | None = None
        self._timer = Timer(self._on_timer)
        self._outbox: dict[Addr, list[bytes]] = {}
        self._runs: list[tuple[bytes, int, Addr]] = []  # sealed GSO runs: (data, segment, addr)
        # Pseudo addresses of port-prediction sockets -> (socket, real address).
        self._routes: dict[Addr, tuple[UdpEndpoint, Addr]] = {}
        self._predictions: dict[bytes, PredictionSockets] = {}
        self._initiations: dict[bytes, bytes] = {}  # peer -> our pending handshake initiation
        self._pongs: dict[bytes, asyncio.Future[float]] = {}  # ping txid -> its answer
        self._wanted: set[str] = set()  # names asked for: re-asked when they (re)join
        self._flush_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the running one, from start()
        self._flush_wanted = False  # datagrams arrived: the end of the socket's drain flushes
        self._in_flush = False
        self._delivering = False
        self._again = False
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._replay is not None:
            self._replay.load_into(self.device)
        udp = await UdpEndpoint.open(self.options.bind, self._on_datagram, self._on_drained)
        self.udp = udp
        lan = self.candidate_policy.announceable(
            (ip, udp.local_addr[1]) for ip in self._lan_addresses())
        self.rdv = rc.RendezvousClient(
            self.options.network_secret, self.options.identity.private, self.options.names, lan,
            self.options.rendezvous, server_key=self.options.rendezvous_key,
            counter_start=int(time.time() * 1e6), fallbacks=self.options.rendezvous_fallbacks,
        )
        self.rdv.start(monotonic())
        self.kick()
        self._nat_check = asyncio.get_running_loop().create_task(self._check_nat())

    async def _check_nat(self) -> None:
        """Learn how our NAT maps ports; port prediction needs to know which side randomizes.

        Until both of the rendezvous' ports answer, again and again (a lost reply must not
        leave a randomizing NAT without port prediction for the node's whole life)."""
        wait = NETCHECK_RETRY_FIRST
        loop = asyncio.get_running_loop()
        while True:
            server = self.rdv.server if self.rdv is not None else self.options.rendezvous
            try:
                mapping = (await loop.run_in_executor(None, netcheck, server)).mapping
            except OSError as exc:
                log.debug("netcheck failed: %s", exc)
                mapping = "unknown"
            if mapping != "unknown":
                break
            log.debug("netcheck: %s did not answer on both ports; again in %.0f s",
                      format_endpoint(server), wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, NETCHECK_RETRY_MAX)
        changed = mapping != self.nat_mapping
        self.nat_mapping = mapping
        for peer in self.peers.values():
            peer.nat_randomizes = self.nat_mapping == "endpoint-dependent"
        self.kick()  # port prediction may now be due for any of them
        if changed:
            log.info("this node's NAT mapping: %s", self.nat_mapping)

    def _recheck_nat(self) -> None:
        """Our public endpoint moved (another network, a rebooted router): how does its NAT
        map ports? The last answer stands until the new one comes."""
        if self._nat_check is not None and not self._nat_check.done():
            return  # one is running; it sees the new network
        self._nat_check = asyncio.get_running_loop().create_task(self._check_nat())

    def _lan_addresses(self) -> list[str]:
        """The address this host uses toward the rendezvous: its LAN candidate (no packet sent)."""
        bound = self.options.bind[0]
        if bound not in ("0.0.0.0", "::", ""):
            return [bound]
        with socket.socket(family(self.options.rendezvous[0]), socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(self.options.rendezvous)
                return [probe.getsockname()[0]]
            except OSError:
                return []

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for peer in self.peers.values():
            peer.close("node shutting down", NODE_STOPPING)
        if self.rdv is not None:
            self.rdv.leave(monotonic())
        self._flush_all = True
        self._flush()
        if self._replay is not None:
            self._replay.save(self.device, monotonic(), force=True)
        # Give the CLOSE frames a moment to leave; they are best effort, as in QUIC.
        await asyncio.sleep(0.05)
        self._timer.cancel()
        if self._nat_check is not None:
            self._nat_check.cancel()
        for sockets in self._predictions.values():
            sockets.close()
        for waiter in self._pongs.values():
            waiter.cancel()
        if self.udp is not None:
            self.udp.close()

    # --- requests from the forwarders and the API ---------------------------------------------

    def add_names(self, names: Sequence[str]) -> None:
        """Register more names, in one request (at once if the node runs, else at its start;
        `Registered` or a refusal follows)."""
        self.options.names = (*self.options.names, *names)
        self._register()

    def remove_names(self, names: Sequence[str]) -> None:
        self.options.names = tuple(n for n in self.options.names if n not in names)
        self._register()

    def holds(self, names: Sequence[str]) -> bool:
        """Whether the rendezvous' last answer registered every one of `names`."""
        return self.rdv is not None and set(names) <= set(self.rdv.registered_names)

    def _register(self) -> None:
        if self.rdv is not None:
            self.rdv.names = self.options.names
            self.rdv.start(monotonic())
            self.kick()

    def request_connect(self, name: str) -> None:
        assert self.rdv is not None
        self._wanted.add(name)
        self.rdv.request_connect(name, monotonic())
        self.kick()

    def ping(self, peer: Peer) -> asyncio.Future[float] | str:
        """Ping `peer` over its path: a future that gets the round trip in seconds, or why no
        ping could be sent (NO_SESSION, NO_PATH). Nothing resolves the future when the ping is
        lost: wait for it with a timeout (then it is NO_ANSWER)."""
        session = self.device.get_session(peer.static)
        if session is None or not session.is_established:
            return NO_SESSION  # it could not be sealed: the flush would drop it
        txid = peer.ping(monotonic())
        if txid is None:
            return NO_PATH
        waiter = asyncio.get_running_loop().create_future()
        self._pongs[txid] = waiter
        waiter.add_done_callback(lambda _: self._pongs.pop(txid, None))
        self.kick(peer)
        return waiter

    def kick(self, peer: Peer | None = None) -> None:
        """Ask for a flush at the end of this event-loop turn (once, however often asked).

        `peer`: only that peer has new work (a forwarder wrote to its channel); None: any peer
        may have, so the flush drains them all.
        """
        if peer is None:
            self._flush_all = True
        elif peer.static != self._delivering_to:
            self._dirty.add(peer.static)
        self._request_flush(peer)

    def flush_now(self, peer: Peer) -> None:
        """`peer`'s channel was given data by a reader callback (a local socket was read): send
        it at once, in that callback, instead of at the end of the loop turn (a `call_soon` hop
        cost about 10 µs a crossing in ping-pong); a burst of reads costs a send each.

        When nothing else waits for a flush (no other peer marked, no flush requested) the
        local read was the only input since the last flush, so only this peer's channel
        changed: its packets go out and its timer is re-armed, and nothing else is asked.
        Whatever of the peer's own work comes due meanwhile is in its deadline, so the timer
        runs it; the machines that had input were flushed already. Otherwise a full flush
        follows the send."""
        if self._in_flush or self._closed:
            self.kick(peer)
            return
        alone = self._flush_handle is None and not self._flush_all and not self._dirty
        if self._send_first(peer) and alone and not self._again:
            self._peer_timers.schedule(peer.static, peer.get_timer())
            self._arm_timer()
            return
        self._dirty.add(peer.static)
        self._flush()

    def _send_first(self, peer: Peer) -> bool:
        """Seal and send what `peer`'s channel has to send before any other work of a flush,
        so the message leaves first and the bookkeeping follows it, off its path. False when
        the peer's session cannot carry data (nothing was sent)."""
        session = self.device.get_session(peer.static)
        if session is None or not session.is_established:
            return False
        now = monotonic()
        self._in_flush, self._again = True, False  # what is sealed queues until sent below
        try:
            datagrams = peer.datagrams_to_send(now, True)
            if datagrams:
                self._seal(session, datagrams, now)
            self._queue_device_datagrams(now)  # sealing may start a rekey's handshake
        finally:
            self._in_flush = False
        self._send_queued()
        return True

    def _request_flush(self, peer: Peer | None = None) -> None:
        if self._in_flush:
            # A forwarder acted during the flush. While a peer's events are being delivered,
            # that peer's packets are built right after: no second flush is needed for it.
            if not self._delivering or (peer is not None and peer.static != self._delivering_to):
                self._again = True
            return
        if self._flush_handle is None and not self._closed:
            # asyncio.get_running_loop() costs a getpid() each: look it up once per node
            loop = self._loop if self._loop is not None else asyncio.get_running_loop()
            self._flush_handle = loop.call_soon(self._flush)

    # --- routes of port-prediction sockets ----------------------------------------------------

    def add_routes(self, routes: dict[Addr, tuple[UdpEndpoint, Addr]]) -> None:
        """Send datagrams for these pseudo addresses out of these sockets."""
        self._routes.update(routes)

    def drop_routes(self, addrs: list[Addr]) -> None:
        for addr in addrs:
            self._routes.pop(addr, None)

    # --- input --------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr, segment: int = 0) -> None:
        """A datagram, or a GRO buffer of datagrams of `segment` bytes each, from `addr`."""
        if not data:
            return
        now = monotonic()
        self._catch_up(now)
        self._flush_wanted = True  # `_on_drained` flushes once the socket is drained
        if packets.isEnabledFor(logging.DEBUG):
            packets.debug("received %d bytes (type %d%s) from %s", len(data), data[0],
                          f", segments of {segment}" if segment else "", format_endpoint(addr))
        if data[0] in SESSION_MESSAGE_TYPES:
            # Consecutive payloads of one session go to its peer as one run: a GRO buffer is
            # mostly one peer's packets, and the per-peer work is then paid once per buffer.
            run: list[bytes] = []
            run_session: Session | None = None
            for session, payload in self.device.receive_batch(data, segment, addr, now,
                                                              time.time()):
                if session is not run_session or session is None:
                    if run_session is not None:
                        self._deliver(run_session, run, addr, now)
                    run, run_session = [], session
                if session is None:  # another layer's datagram, coalesced with ours
                    self._on_other(payload, addr, now)
                else:
                    run.append(payload)
            if run_session is not None:
                self._deliver(run_session, run, addr, now)
        elif 0 < segment < len(data):
            for offset in range(0, len(data), segment):
                self._on_datagram(data[offset:offset + segment], addr)
        else:
            self._on_other(data, addr, now)

    def _on_drained(self) -> None:
        """The socket was drained: one flush for everything it brought."""
        if self._flush_wanted:
            self._flush_wanted = False
            self._flush()

    def _on_other(self, data: bytes, addr: Addr, now: float) -> None:
        """A datagram of the rendezvous protocol (or a relay envelope) from `addr`."""
        if not data or self.rdv is None or addr != self.rdv.server:
            return
        if data[0] == rp.RELAY_FROM:
            unwrapped = self.rdv.unwrap_relay(data)
            if unwrapped is not None:
                src, inner = unwrapped
                self._receive_session(inner, relay_addr(src), now)
        else:
            self.rdv.receive_datagram(data, addr, now)  # its events mark their peers

    def _receive_session(self, data: bytes, addr: Addr, now: float) -> None:
        result = self.device.receive(data, addr, now, time.time())
        if result is None:
            return  # a handshake message: the flush works it off and marks its peer
        self._deliver(result[0], [result[1]], addr, now)

    def _deliver(self, session: Session, payloads: list[bytes], addr: Addr, now: float) -> None:
        """Authenticated payloads of one session, from `addr`, to its peer."""
        peer = self.peers.get(session.peer_public)
        if peer is None:
            peer = self._peer(session.peer_public, now)
            if peer is None:
                return
        self._dirty.add(peer.static)
        peer.receive_batch(payloads, addr, now)
        if peer.replaced_channel:
            # The peer restarted: its old streams end now, before any local callback can
            # attach a connection to the new channel (whose stream ids start again at 0).
            self._deliver_channel_events(peer)

    def catch_up(self) -> None:
        """Run the timers that are overdue, before new input is acted on. After the process did
        not run for a while (a laptop asleep, SIGSTOP, a paused VM) the loop hands it its
        sockets' backlog and new local connections before its timers: those would meet
        channels that died meanwhile (the peer gave up on them) as if they were alive, and a
        connection made on waking would go to one and be reset."""
        self._catch_up(monotonic())

    def _catch_up(self, now: float) -> None:
        # The loop's own timers run on CLOCK_MONOTONIC, which a suspend stops: after one, the
        # timer armed for a deadline of ours (CLOCK_BOOTTIME) fires as late as the sleep was
        # long, unless input runs it first.
        if not self._in_flush and self._timer.overdue(now):
            self._on_timer(now)

    def _on_timer(self, now: float | None = None) -> None:
        """Expired timers of the machines that have one due; the flush then handles the
        device's own and drains those peers."""
        if now is None:
            now = monotonic()
        if self.rdv is not None and (d := self.rdv.get_timer()) is not None and d <= now:
            self.rdv.handle_timer(now)
        # A peer's entry is a lower bound of its deadline (`TimerHeap`), such as a PTO that each
        # packet since has pushed later. Popping only what is due by the clock, a timer run early
        # found nothing, was armed again for the same stale entry, and ran through `call_soon`
        # until the clock passed it: 0.6-0.8 extra loop turns per ping-pong round trip. Popped
        # here, the peer runs only what is really due and is scheduled again with its deadline.
        for static in self._peer_timers.pop_due(now + TIMER_EARLY):
            peer = self.peers.get(static)
            if peer is not None:
                peer.handle_timer(now)
                self._dirty.add(static)
        self._flush()

    def _peer(self, static: bytes, now: float) -> Peer | None:
        """The link with `static`, made if there is none; None past `max_peers` links."""
        peer = self.peers.get(static)
        if peer is None:
            if len(self.peers) >= self.options.max_peers:
                if now - self._refusing_links_since >= LIMIT_LOG_INTERVAL:
                    log.warning("refusing a link with %s: all %d links are in use",
                                fingerprint(static), self.options.max_peers)
                self._refusing_links_since = now
                return None
            peer = Peer(
                static=static,
                path=PathManager(started=now, relay_allowed=not self.options.direct_only,
                                 policy=self.candidate_policy, budget=self.probe_budget),
                is_client=self.options.identity.public < static,
                congestion=self.options.congestion,
                params=self.options.transport,
                session_params=lambda: self._session_params(static),
                nat_randomizes=self.nat_mapping == "endpoint-dependent",
            )
            self.peers[static] = peer
            self._dirty.add(static)
            if self.on_new_peer is not None:
                self.on_new_peer(peer)
        return peer

    def _session_params(self, static: bytes) -> TransportParams | None:
        """The transport parameters `static` announced in the handshake of the keys in use."""
        session = self.device.get_session(static)
        return None if session is None else session.peer_params

    def _drop_peer(self, peer: Peer) -> None:
        """Forget a link nobody asked for by name (its session was removed or refused)."""
        if self.peers.get(peer.static) is not peer:
            return
        self._deliver_channel_events(peer)  # its streams end before it goes
        del self.peers[peer.static]
        self._peer_timers.discard(peer.static)
        self._dirty.discard(peer.static)
        self._initiations.pop(peer.static, None)
        self._release_prediction(peer.static)
        log.debug("link with %s removed", fingerprint(peer.static))

    def _release_prediction(self, static: bytes) -> None:
        """Close the port-prediction sockets of the peer `static`, if it has any."""
        sockets = self._predictions.pop(static, None)
        if sockets is not None:
            self.drop_routes(list(sockets.routes))
            sockets.close()

    # --- output -------------------------------------------------------------------------------

    def _send(self, data: bytes, addr: Addr) -> None:
        """Queue a datagram; the flush hands each address's run to the socket in one batch."""
        if is_relay(addr):
            if self.rdv is None or (envelope := self.rdv.wrap_relay(relay_peer(addr),
                                                                   data)) is None:
                return  # no relay token toward that peer: the server would drop it anyway
            data, addr = envelope, self.rdv.server
        batch = self._outbox.get(addr)
        if batch is None:
            self._outbox[addr] = [data]
        else:
            batch.append(data)
        if not self._in_flush:
            self._request_flush()

    def _send_run(self, data: bytes, segment: int, addr: Addr) -> None:
        """Queue sealed datagrams of `segment` bytes back to back for one GSO send."""
        if is_relay(addr):  # each datagram gets its own relay envelope
            for offset in range(0, len(data), segment):
                self._send(data[offset:offset + segment], addr)
            return
        self._runs.append((data, segment, addr))
        if not self._in_flush:
            self.kick()

    def _send_queued(self) -> None:
        if not self._outbox and not self._runs:
            return  # the flush after a `_send_first` mostly finds nothing left
        outbox, self._outbox = self._outbox, {}
        runs, self._runs = self._runs, []
        if self.udp is None:
            return
        for addr, batch in outbox.items():
            if packets.isEnabledFor(logging.DEBUG):
                packets.debug("sending %d datagram%s (%d bytes) to %s", len(batch),
                              "" if len(batch) == 1 else "s", sum(map(len, batch)),
                              format_endpoint(addr))
            route = self._routes.get(addr) if self._routes else None
            if route is not None:
                route[0].send_batch(batch, route[1])  # an extra socket of a port prediction
            else:
                self.udp.send_batch(batch, addr)
        for data, segment, addr in runs:
            if packets.isEnabledFor(logging.DEBUG):
                packets.debug("sending %d datagrams (%d bytes) to %s as one GSO run",
                              -(-len(data) // segment), len(data), format_endpoint(addr))
            route = self._routes.get(addr) if self._routes else None
            if route is not None:
                route[0].send_segments(data, segment, route[1])
            else:
                self.udp.send_segments(data, segment, addr)

    def _initiation_allowed(self, data: bytes, addr: Addr, now: float) -> bool:
        """Whether our handshake initiation may go to `addr`: the session retransmits to every
        address it was ever given, so its peer's probe limits decide (`Peer.may_send_initiation`).
        Remembers it for that peer's punching resends."""
        for peer in self.peers.values():
            if peer.may_send_initiation(addr, now):
                self._initiations[peer.static] = data
                return True
        return False

    def _flush(self) -> None:
        if self._flush_handle is not None:  # this flush does what a scheduled one would
            self._flush_handle.cancel()
            self._flush_handle = None
        self._in_flush, self._again = True, False
        try:
            self._flush_machines(monotonic())
        finally:
            self._in_flush = False
        self._send_queued()
        self._arm_timer()
        if self._again:
            self._request_flush()  # what was kicked meanwhile is marked already

    def _flush_machines(self, now: float) -> None:
        if (deadline := self.device.get_timer()) is not None and deadline <= now:
            self.device.handle_timer(now, time.time())
        self._drain_device(now)
        self._drain_rendezvous(now)
        if self._flush_all:
            self._flush_all = False
            busy = list(self.peers.values())
        else:
            busy = [p for s in self._dirty if (p := self.peers.get(s)) is not None]
        self._dirty = set()
        for peer in busy:
            self._drain_peer(peer, now)
            if self.peers.get(peer.static) is peer:  # not dropped meanwhile
                self._peer_timers.schedule(peer.static, peer.get_timer())
        if self._replay is not None:
            self._replay.save(self.device, now)
        self._queue_device_datagrams(now)
        if self.rdv is not None:
            for data, addr in self.rdv.datagrams_to_send():
                self._send(data, addr)

    def _queue_device_datagrams(self, now: float) -> None:
        for data, addr in self.device.datagrams_to_send():
            if is_initiation(data) and not self._initiation_allowed(data, addr, now):
                continue
            self._send(data, addr)

    def _arm_timer(self) -> None:
        # After every flush (a hot path): compared in place, nothing built.
        earliest = self._peer_timers.earliest()
        for deadline in (
            self.device.get_timer(),
            None if self.rdv is None else self.rdv.get_timer(),
            None if self._replay is None else self._replay.get_timer(self.device),
        ):
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        self._timer.arm(earliest)

    def _drain_device(self, now: float) -> None:
        # Transport data never comes this way: `_receive_session` takes it straight from
        # `Device.receive_transport` (the hot path), so there are no PayloadReceived events.
        while (event := self.device.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                peer = self._peer(event.peer_public, now)
                if peer is not None:
                    self._dirty.add(peer.static)
                    log.debug("handshake with %s completed %s", peer_label(peer.name, peer.static),
                              "through the relay" if is_relay(event.addr)
                              else f"at {format_endpoint(event.addr)}")
                    peer.on_handshake_completed(event.addr, now)
                continue
            lost = self.peers.get(event.peer_public)
            if lost is None:
                continue
            self._dirty.add(lost.static)
            if isinstance(event, HandshakeRefused):
                lost.on_refused(event.reason)
            elif isinstance(event, HandshakeFailed | SessionExpired):
                lost.on_session_lost(getattr(event, "reason", "session expired"), now)
            elif isinstance(event, SessionRemoved):
                if lost.name is None:
                    self._drop_peer(lost)  # a link it opened, idle: nothing waits for it
                elif lost.reconnecting_since is None:
                    lost.on_session_lost("session idle", now)

    def _drain_rendezvous(self, now: float) -> None:
        if self.rdv is None:
            return
        while (event := self.rdv.next_event()) is not None:
            if isinstance(event, rc.Registered):
                registered_as = (self.options.names, event.public_endpoint, self.rdv.server)
                if registered_as != self._registered_as:  # news, not every refresh
                    if (self._registered_as is not None
                            and self._registered_as[1] != event.public_endpoint):
                        self._recheck_nat()
                    self._registered_as = registered_as
                    log.info("registered at the rendezvous %s as %s; public endpoint %s",
                             format_endpoint(self.rdv.server),
                             ", ".join(self.options.names) or "(no names)",
                             format_endpoint(event.public_endpoint))
                self.public_endpoint = event.public_endpoint
                self.registered.set()
            elif isinstance(event, rc.Introduced):
                self._introduced(event, now)
            elif isinstance(event, rc.PeerLeft):
                if (left := self.peers.get(event.static)) is not None:
                    self._dirty.add(left.static)
                    left.on_left(now)
            elif isinstance(event, rc.PeerJoined):
                # A node we want came (back): ask for it at once rather than at the next retry.
                for name in set(event.peer.names) & self._wanted:
                    self.rdv.request_connect(name, now)
            for listener in list(self.rdv_events):
                listener(event)

    def _introduced(self, event: rc.Introduced, now: float) -> None:
        peer = self._peer(event.peer_static, now)
        if peer is None:
            return
        self._dirty.add(peer.static)
        peer.on_introduced(event.public_endpoint, list(event.lan_candidates),
                           event.peer_name if event.initiated_by_us else None, now)
        lan = ", ".join(format_endpoint(a) for a in event.lan_candidates) or "none"
        who = fingerprint(event.peer_static)
        who = f"{event.peer_name} ({who})" if event.peer_name else who  # a connector has no name
        log.info("introduced to %s: public %s, lan %s", who,
                 format_endpoint(event.public_endpoint), lan)

    def _drain_peer(self, peer: Peer, now: float) -> None:
        session = self.device.get_session(peer.static)
        established = session is not None and session.is_established
        # What arrived for the local side first: a lone reply is written to its socket before
        # the peer's bookkeeping. (The channel's events come from its input, timers and closes,
        # all before the flush; the peer's poll and requests add none.)
        self._deliver_channel_events(peer)
        peer.poll(now, established)
        while (event := peer.next_event()) is not None:
            self._do(peer, event, now)
        datagrams = peer.datagrams_to_send(now, established)
        if not datagrams or session is None or not established:
            return
        self._seal(session, datagrams, now)

    def _seal(self, session: Session, datagrams: list[tuple[Payload, Addr]], now: float) -> None:
        """Seal a peer's payloads in runs: consecutive payloads to one address of one size (the
        last may be shorter), as many as one GSO send carries, in one call and one send."""
        count, index = len(datagrams), 0
        sizes = [payload_size(payload) for payload, _ in datagrams]
        while index < count:
            payload, addr = datagrams[index]
            size = sizes[index]
            # nested 2-argument min: compiled, inline; a 3-argument one is a generic call
            limit = min(count, index + min(MAX_GSO_SEGMENTS,
                                           max(1, MAX_GSO_BYTES // (size + TRANSPORT_OVERHEAD))))
            end = index + 1
            while end < limit and datagrams[end][1] == addr and sizes[end] == size:
                end += 1
            if end < limit and datagrams[end][1] == addr and sizes[end] < size:
                end += 1  # GSO allows a shorter last segment
            if end - index == 1:
                datagram = session.seal(payload, now)
                if datagram is not None:
                    self._send(datagram, addr)
            else:
                run = session.seal_batch([p for p, _ in datagrams[index:end]], now)
                if run is not None:
                    self._send_run(run, size + TRANSPORT_OVERHEAD, addr)
            index = end

    def _deliver_channel_events(self, peer: Peer) -> None:
        self._delivering, self._delivering_to = True, peer.static
        try:
            while (channel_event := peer.next_channel_event()) is not None:
                if peer.on_event is not None:
                    peer.on_event(peer, channel_event)
                if isinstance(channel_event, ChannelClosed):
                    self._notify(peer)
        finally:
            self._delivering, self._delivering_to = False, None

    def _do(self, peer: Peer, event: PeerEvent, now: float) -> None:
        """What a peer asked for."""
        if isinstance(event, HandshakeWanted):
            if packets.isEnabledFor(logging.DEBUG):
                packets.debug("handshake initiation to %s: %s", peer_label(peer.name, peer.static),
                              ", ".join(address_words(a) for a in event.addrs))
            try:
                self.device.connect(peer.static, event.addrs, now, time.time())
            except SessionLimitReached as exc:
                log.debug("no session with %s: %s", fingerprint(peer.static), exc)
                if peer.name is None:
                    self._drop_peer(peer)
                return
            initiation = self._initiations.get(peer.static) if event.resend else None
            if initiation:
                # A copy of the running initiation is as good as a new one (a duplicate that
                # arrives is refused as a replay).
                for addr in event.addrs:
                    self._send(initiation, addr)
        elif isinstance(event, PeerChanged):
            self._notify(peer)
        elif isinstance(event, PongReceived):
            waiter = self._pongs.get(event.txid)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.rtt)
        elif isinstance(event, RegistrationWanted):
            if self.rdv is not None:
                self.rdv.start(now)
        elif isinstance(event, IntroductionWanted):
            if self.rdv is not None:
                self.rdv.request_connect(event.name, now)
        elif isinstance(event, SocketsWanted):
            self._release_prediction(peer.static)  # the socket a lost path of the last ran on
            sockets = PredictionSockets(event.count, event.target, self._on_datagram,
                                        self._on_drained)
            self._predictions[peer.static] = sockets
            self.add_routes(sockets.routes)
            peer.sockets_opened(sockets.targets())
        elif isinstance(event, SocketsReleased):
            released = self._predictions.pop(peer.static, None)
            if released is not None:
                self.drop_routes(list(released.routes))
                if event.keep is not None and event.keep in released.routes:
                    released.keep_only(event.keep)
                    self._predictions[peer.static] = released
                    self.add_routes(released.routes)
                else:
                    released.close()

    def _notify(self, peer: Peer) -> None:
        for callback in list(peer.on_change):
            callback(peer)

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = monotonic()
        return {
            "pid": os.getpid(),
            "fingerprint": fingerprint(self.options.identity.public),
            "names": list(self.options.names),
            "public_endpoint": None if self.public_endpoint is None
            else format_endpoint(self.public_endpoint),
            "nat_mapping": self.nat_mapping,
            "uptime_s": round(now - self.started, 1),
            "rendezvous": self.rendezvous_status(now),
            "peers": [peer.status(now) for peer in self.peers.values()],
            "drops": {k: v for k, v in dataclasses.asdict(self.device.counters).items() if v},
        }

    @property
    def rendezvous_server(self) -> Addr:
        """The server the node is registered at, or trying: the first one until a failover."""
        return self.rdv.server if self.rdv is not None else self.options.rendezvous

    def rendezvous_health(self, now: float) -> rc.Health:
        if self.rdv is None:
            return rc.Health(registered=False, names=(), last_answer=None, unanswered=None)
        return self.rdv.health(now)

    def rendezvous_status(self, now: float) -> dict[str, Any]:
        """The rendezvous for `ptunnel status`: registered or not, and how recently it answered."""
        health = self.rendezvous_health(now)
        return {
            # The server registered at (or being tried): after a failover, not the first one.
            "server": format_endpoint(self.rendezvous_server),
            "servers": [format_endpoint(a) for a in (self.options.rendezvous,
                                                     *self.options.rendezvous_fallbacks)],
            "registered": health.registered,
            "names": list(health.names),
            "last_answer_s": None if health.last_answer is None else round(health.last_answer, 1),
            "unanswered_s": None if health.unanswered is None else round(health.unanswered, 1),
        }
