"""A running node: one UDP socket shared by the secure sessions, the rendezvous client, the path
managers and the channels of every peer. This is the asyncio shell around the sans-IO machines.

Everything that arrives (a datagram, a timer, a local TCP write) only feeds a machine and asks for
a *flush*; one flush per event-loop turn then drains every machine's events and outgoing
datagrams and re-arms the single timer. That batches work per turn instead of per packet.

Inside a session's encrypted payloads (see `tunnel.node_wire`), channel packets carry the
sender's *incarnation* (random per channel) and the incarnation it believes the receiver has, so a
peer that restarted is noticed at once and packets of a dead channel never reach a new one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rendezvous import protocol as rp
from tunnel import node_wire as nw
from tunnel import rdvclient as rc
from tunnel.birthday import SOCKETS, Opener, Prober
from tunnel.channel import Channel
from tunnel.channel_events import ChannelClosed, ChannelEvent
from tunnel.device import Device
from tunnel.identity import Identity
from tunnel.netkeys import fingerprint, handshake_psk
from tunnel.pmtu import PathMtu
from tunnel.punch import Kind, PathChanged, PathManager, RepunchNeeded
from tunnel.session import SessionConfig
from tunnel.session_events import (
    HandshakeCompleted,
    HandshakeFailed,
    PayloadReceived,
    SessionExpired,
)
from tunnel.spray import SpraySockets
from tunnel.udp import Addr, Timer, UdpEndpoint, monotonic
from tunnel.wire import SESSION_MESSAGE_TYPES, TRANSPORT_OVERHEAD

log = logging.getLogger(__name__)

CHANNEL_HEADER = 9  # payload type (1) + sender incarnation (4) + receiver incarnation (4)
RELAY_OVERHEAD = 33  # relay envelope: type (1) + static key (32)


def channel_budget(datagram_size: int, relayed: bool) -> int:
    """Largest channel packet that fits a UDP payload of `datagram_size` on this path."""
    return datagram_size - TRANSPORT_OVERHEAD - CHANNEL_HEADER - (RELAY_OVERHEAD if relayed else 0)
RELAY_HOST = "relay"  # pseudo address of "through the rendezvous", one per peer
# Without a direct path, ask the rendezvous to introduce us again (the peer's NAT may have
# rebooted onto new ports): after this long, then doubling up to the cap (seconds).
REPUNCH_FIRST = 3.0
REPUNCH_MAX = 60.0


def relay_addr(peer: bytes) -> Addr:
    return (f"{RELAY_HOST}:{peer.hex()}", 0)


def is_relay(addr: Addr) -> bool:
    # Port 0 is never a real source port: test it first, the string only for pseudo addresses.
    return addr[1] == 0 and addr[0].startswith(RELAY_HOST + ":")


@dataclass
class NodeOptions:
    identity: Identity
    network_secret: bytes
    rendezvous: Addr
    names: tuple[str, ...] = ()
    allow: list[bytes] | None = None
    bind: Addr = ("0.0.0.0", 0)
    keepalive: float = 25.0
    direct_only: bool = False
    congestion: str = "bbr"


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
    # Birthday-paradox punching (tunnel.birthday): at most one attempt per link.
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


class Node:
    """The shell: feeds datagrams and timers into the machines and sends what they produce."""

    def __init__(self, options: NodeOptions) -> None:
        self.options = options
        self.started = monotonic()
        self.device = Device(
            options.identity.private,
            handshake_psk(options.network_secret),
            allowed=options.allow,
            config=SessionConfig(persistent_keepalive=options.keepalive or None),
        )
        self.links: dict[bytes, PeerLink] = {}
        self.rdv: rc.RendezvousClient | None = None
        self.udp: UdpEndpoint | None = None
        self.public_endpoint: Addr | None = None
        self.nat_mapping = "unknown"  # from a netcheck at start: how our NAT maps ports
        self.registered = asyncio.Event()
        self.rdv_events: list[Callable[[rc.Event], None]] = []
        self.on_new_link: Callable[[PeerLink], None] | None = None
        self._timer = Timer(self._on_timer)
        self._outbox: dict[Addr, list[bytes]] = {}
        self._routes: dict[Addr, tuple[UdpEndpoint, Addr]] = {}  # pseudo addr -> socket, addr
        self._flush_scheduled = False
        self._in_flush = False
        self._again = False
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.udp = await UdpEndpoint.open(self.options.bind, self._on_datagram)
        lan = [(ip, self.udp.local_addr[1]) for ip in self._lan_addresses()]
        self.rdv = rc.RendezvousClient(
            self.options.network_secret, self.options.identity.public, self.options.names, lan,
            self.options.rendezvous, counter_start=int(time.time() * 1e6),
        )
        self.rdv.start(monotonic())
        self.kick()
        asyncio.get_running_loop().create_task(self._check_nat())

    async def _check_nat(self) -> None:
        """Learn how our NAT maps ports; port prediction needs to know which side randomizes."""
        from tunnel.netcheck import netcheck

        try:
            result = await asyncio.get_running_loop().run_in_executor(
                None, netcheck, self.options.rendezvous)
        except OSError as exc:
            log.debug("netcheck failed: %s", exc)
            return
        self.nat_mapping = result.mapping
        log.info("this node's NAT mapping: %s", self.nat_mapping)

    def _lan_addresses(self) -> list[str]:
        """The address this host uses toward the rendezvous: its LAN candidate (no packet sent)."""
        bound = self.options.bind[0]
        if bound not in ("0.0.0.0", "::", ""):
            return [bound]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(self.options.rendezvous)
                return [probe.getsockname()[0]]
            except OSError:
                return []

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for link in self.links.values():
            if link.channel is not None:
                link.channel.close("node shutting down")
        if self.rdv is not None:
            self.rdv.leave(monotonic())
        self._flush()
        # Give the CLOSE frames a moment to leave; they are best effort, as in QUIC.
        await asyncio.sleep(0.05)
        self._timer.cancel()
        for link in self.links.values():
            if link.spray is not None:
                link.spray.close()
        if self.udp is not None:
            self.udp.close()

    # --- requests from the forwarders ---------------------------------------------------------

    def add_name(self, name: str) -> None:
        """Register one more name (re-registers at once; `Registered` or a refusal follows)."""
        self.options.names = (*self.options.names, name)
        self._register()

    def remove_name(self, name: str) -> None:
        self.options.names = tuple(n for n in self.options.names if n != name)
        self._register()

    def _register(self) -> None:
        if self.rdv is not None:
            self.rdv.names = self.options.names
            self.rdv.start(monotonic())
            self.kick()

    def request_connect(self, name: str) -> None:
        assert self.rdv is not None
        self.rdv.request_connect(name, monotonic())
        self.kick()

    def ping(self, link: PeerLink) -> None:
        path = link.path.path
        if path is None:
            return
        addr = path.addr if path.direct and path.addr else relay_addr(link.static)
        self._send_ping(link, addr, monotonic())
        self.kick()

    def kick(self) -> None:
        """Ask for a flush at the end of this event-loop turn (once, however often asked)."""
        if self._in_flush:
            self._again = True  # a forwarder wrote during the flush: flush once more after it
            return
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    # --- input --------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        if not data:
            return
        now = monotonic()
        kind = data[0]
        if kind in SESSION_MESSAGE_TYPES:
            self._receive_session(data, addr, now)
        elif self.rdv is not None and addr == self.rdv.server:
            if kind == rp.RELAY_FROM:
                unwrapped = self.rdv.unwrap_relay(data)
                if unwrapped is not None:
                    src, inner = unwrapped
                    self._receive_session(inner, relay_addr(src), now)
            else:
                self.rdv.receive_datagram(data, addr, now)
        self.kick()

    def _receive_session(self, data: bytes, addr: Addr, now: float) -> None:
        if data[0] != 4:
            self.device.receive_datagram(data, addr, now, time.time())
            return
        result = self.device.receive_transport(data, addr, now)
        if result is None:
            return
        session, payload = result
        link = self.links.get(session.peer_public)
        if link is None:
            link = self._link(session.peer_public, now)
        via = None if is_relay(addr) else addr
        link.path.on_authenticated(via, now)
        if payload:
            self._receive_payload(link, payload, addr, now)

    def _receive_payload(self, link: PeerLink, payload: bytes, addr: Addr, now: float) -> None:
        kind = payload[0]
        if kind == nw.PAYLOAD_CHANNEL and len(payload) >= CHANNEL_HEADER:
            sender, receiver = payload[1:5], payload[5:9]
            if receiver not in (link.incarnation, bytes(4)):
                return  # meant for a channel of ours that no longer exists
            if link.channel is None:
                self._open_channel(link)  # keys confirmed by this very packet
                self._notify(link)
            if sender != link.peer_incarnation:
                self._peer_restarted(link, sender, now)
            assert link.channel is not None
            link.channel.receive_packet(payload[CHANNEL_HEADER:], now)
        elif kind == nw.PAYLOAD_PING and len(payload) >= 1 + nw.TXID_SIZE:
            # Padded pings probe the path's datagram size; the answer is small either way.
            txid = payload[1 : 1 + nw.TXID_SIZE]
            self._seal_to(link, nw.encode_ping(nw.PAYLOAD_PONG, txid), addr, now)
        elif kind == nw.PAYLOAD_BIRTHDAY:
            self._start_probing(link, now)
        elif kind == nw.PAYLOAD_PONG and len(payload) == 1 + nw.TXID_SIZE:
            sent = link.pings.pop(payload[1:], None)
            if sent is not None:
                sent_at, to, size = sent
                rtt = now - sent_at
                link.rtt = rtt
                if not is_relay(to):
                    link.path.on_probe_answered(to, rtt, now)
                if size and link.mtu.on_probe_answered(size) and link.channel is not None:
                    link.channel.set_max_packet_size(channel_budget(size, relayed=False))
                    log.info("path to %s carries %d-byte datagrams", fingerprint(link.static),
                             size)

    def _on_timer(self) -> None:
        now = monotonic()
        if (deadline := self.device.get_timer()) is not None and deadline <= now:
            self.device.handle_timer(now, time.time())
        if self.rdv is not None and (d := self.rdv.get_timer()) is not None and d <= now:
            self.rdv.handle_timer(now)
        for link in list(self.links.values()):
            if link.path.get_timer() <= now:
                link.path.handle_timer(now)
            channel = link.channel
            if channel is not None and (d := channel.get_timer()) is not None and d <= now:
                channel.handle_timer(now)
        self._flush()

    # --- links and channels -------------------------------------------------------------------

    def _link(self, peer: bytes, now: float) -> PeerLink:
        link = self.links.get(peer)
        if link is None:
            path = PathManager(started=now, relay_allowed=not self.options.direct_only)
            link = PeerLink(static=peer, path=path)
            self.links[peer] = link
            if self.on_new_link is not None:
                self.on_new_link(link)
        return link

    def _open_channel(self, link: PeerLink) -> None:
        path = link.path.path
        relayed = path is None or not path.direct
        link.channel = Channel(
            is_client=self.options.identity.public < link.static,
            max_packet_size=channel_budget(link.mtu.size, relayed),
            congestion=self.options.congestion,
        )
        link.incarnation = os.urandom(4)
        link.connected_at = monotonic()
        log.info("channel open with %s", fingerprint(link.static))

    def _peer_restarted(self, link: PeerLink, incarnation: bytes, now: float) -> None:
        if link.peer_incarnation != bytes(4) and link.channel is not None:
            log.info("peer %s restarted: resetting its streams", fingerprint(link.static))
            self._deliver(link, ChannelClosed("peer restarted", 0, by_peer=True))
            self._open_channel(link)
        link.peer_incarnation = incarnation

    def _deliver(self, link: PeerLink, event: ChannelEvent) -> None:
        if link.on_event is not None:
            link.on_event(link, event)

    # --- output -------------------------------------------------------------------------------

    def _send(self, data: bytes, addr: Addr) -> None:
        """Queue a datagram; the flush hands each address's run to the socket in one batch."""
        if is_relay(addr):
            if self.rdv is None:
                return
            peer = bytes.fromhex(addr[0][len(RELAY_HOST) + 1 :])
            data, addr = self.rdv.wrap_relay(peer, data), self.rdv.server
        batch = self._outbox.get(addr)
        if batch is None:
            self._outbox[addr] = [data]
        else:
            batch.append(data)
        if not self._in_flush:
            self.kick()

    def _send_queued(self) -> None:
        outbox, self._outbox = self._outbox, {}
        if self.udp is None:
            return
        for addr, batch in outbox.items():
            route = self._routes.get(addr) if self._routes else None
            if route is not None:
                route[0].send_batch(batch, route[1])  # an extra socket of a birthday punch
            else:
                self.udp.send_batch(batch, addr)

    def _seal_to(self, link: PeerLink, payload: bytes, addr: Addr, now: float) -> bool:
        session = self.device.get_session(link.static)
        if session is None or not session.is_established:
            return False
        datagram = session.seal(payload, now)
        if datagram is None:
            return False
        self._send(datagram, addr)
        return True

    def _remember_initiation(self, data: bytes, addr: Addr) -> None:
        for link in self.links.values():
            if addr in link.path.candidates or addr == relay_addr(link.static):
                link.initiation = data

    def _send_ping(self, link: PeerLink, addr: Addr, now: float, size: int = 0) -> None:
        """A path ping; with `size`, padded to a `size`-byte datagram to probe the path MTU."""
        txid = os.urandom(nw.TXID_SIZE)
        if len(link.pings) > 64:
            link.pings.clear()  # unanswered pings of dead paths
        link.pings[txid] = (now, addr, size)
        payload = nw.encode_ping(nw.PAYLOAD_PING, txid)
        if size:
            payload += bytes(size - TRANSPORT_OVERHEAD - len(payload))
        self._seal_to(link, payload, addr, now)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._in_flush, self._again = True, False
        try:
            self._flush_machines(monotonic())
        finally:
            self._in_flush = False
        self._send_queued()
        self._arm_timer()
        if self._again:
            self.kick()

    def _flush_machines(self, now: float) -> None:
        if (deadline := self.device.get_timer()) is not None and deadline <= now:
            self.device.handle_timer(now, time.time())
        self._drain_device(now)
        self._drain_rendezvous(now)
        for link in list(self.links.values()):
            self._drain_link(link, now)
        for data, addr in self.device.datagrams_to_send():
            if data[0] == 1:
                self._remember_initiation(data, addr)
            self._send(data, addr)
        if self.rdv is not None:
            for data, addr in self.rdv.datagrams_to_send():
                self._send(data, addr)

    def _arm_timer(self) -> None:
        deadlines = [self.device.get_timer()]
        if self.rdv is not None:
            deadlines.append(self.rdv.get_timer())
        for link in self.links.values():
            deadlines.append(link.path.get_timer())
            deadlines.append(link.mtu.get_timer())
            if link.opener is not None:
                deadlines.append(link.opener.get_timer())
            if link.prober is not None:
                deadlines.append(link.prober.get_timer())
            if link.channel is not None:
                deadlines.append(link.channel.get_timer())
        armed = [d for d in deadlines if d is not None]
        self._timer.arm(min(armed) if armed else None)

    def _drain_device(self, now: float) -> None:
        while (event := self.device.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                link = self._link(event.peer_public, now)
                link.path.on_authenticated(None if is_relay(event.addr) else event.addr, now)
                if link.channel is None:
                    self._open_channel(link)
                self._notify(link)
            elif isinstance(event, PayloadReceived):
                link = self._link(event.peer_public, now)
                link.path.on_authenticated(None if is_relay(event.addr) else event.addr, now)
                self._receive_payload(link, event.data, event.addr, now)
            elif isinstance(event, HandshakeFailed | SessionExpired):
                lost = self.links.get(event.peer_public)
                if lost is not None:
                    reason = getattr(event, "reason", "session expired")
                    log.warning("lost %s: %s", fingerprint(lost.static), reason)
                    if lost.channel is not None and lost.channel.is_open:
                        lost.channel.close(reason)
                        self._deliver(lost, ChannelClosed(reason, 0, by_peer=False))
                    lost.channel = None
                    self._notify(lost)

    def _drain_rendezvous(self, now: float) -> None:
        if self.rdv is None:
            return
        while (event := self.rdv.next_event()) is not None:
            if isinstance(event, rc.Registered):
                self.public_endpoint = event.public_endpoint
                self.registered.set()
            elif isinstance(event, rc.Introduced):
                self._introduced(event, now)
            for listener in list(self.rdv_events):
                listener(event)

    def _introduced(self, event: rc.Introduced, now: float) -> None:
        link = self._link(event.peer_static, now)
        if event.initiated_by_us:
            link.name = event.peer_name
        link.path.add_candidates([event.public_endpoint], Kind.PUBLIC, now)
        link.path.add_candidates(event.lan_candidates, Kind.LAN, now)
        log.info("introduced to %s (%s): public %s, lan %s", event.peer_name,
                 fingerprint(event.peer_static), event.public_endpoint, event.lan_candidates)

    def _notify(self, link: PeerLink) -> None:
        for callback in list(link.on_change):
            callback(link)

    def _drain_link(self, link: PeerLink, now: float) -> None:
        session = self.device.get_session(link.static)
        established = session is not None and session.is_established
        probes = link.path.probes_due(now)
        if probes:
            if established:
                for addr in probes:
                    self._send_ping(link, addr, now)
            else:
                # Punching: both sides send at once, so whichever initiation finds the other
                # NAT already open gets through. A copy of the running initiation is as good
                # as a new one (a duplicate that arrives is refused as a replay).
                self.device.connect(link.static, probes, now, time.time())
                for addr in probes:
                    if link.initiation:
                        self._send(link.initiation, addr)
        if link.path.use_relay(now) and not established and not link.relay_candidate:
            link.relay_candidate = True
            self.device.connect(link.static, [relay_addr(link.static)], now, time.time())
        while (event := link.path.next_event()) is not None:
            if isinstance(event, RepunchNeeded):
                log.info("path to %s went silent; punching again", fingerprint(link.static))
                if self.rdv is not None:
                    self.rdv.start(now)  # our own NAT may have moved us: re-register at once
                link.repunch_interval = REPUNCH_FIRST
                link.repunch_at = now + REPUNCH_FIRST
            elif isinstance(event, PathChanged):
                log.info("path to %s: %s", fingerprint(link.static), link.describe_path())
                direct = event.new is not None and event.new.direct
                if direct:
                    link.mtu.restart(now)  # a new path has proved nothing yet
                else:
                    link.mtu.stop()
                if link.channel is not None:
                    link.channel.set_max_packet_size(channel_budget(link.mtu.size, not direct))
                if event.new is not None:
                    self.ping(link)
                self._notify(link)
        direct = link.path.path is not None and link.path.path.direct
        if not direct and link.name and self.rdv is not None and now >= link.repunch_at:
            if link.repunch_at:
                self.rdv.request_connect(link.name, now)
            link.repunch_at = now + link.repunch_interval
            link.repunch_interval = min(link.repunch_interval * 2, REPUNCH_MAX)
        if established:
            self._birthday(link, direct, now)
        channel = link.channel
        if channel is None:
            return
        while (channel_event := channel.next_event()) is not None:
            self._deliver(link, channel_event)
            if isinstance(channel_event, ChannelClosed):
                self._notify(link)
        path = link.path.path
        if path is None or not established:
            return
        addr = path.addr if path.direct and path.addr is not None else relay_addr(link.static)
        if path.direct and (probe := link.mtu.probe_due(now)) is not None:
            self._send_ping(link, addr, now, size=probe)
        packets = channel.packets_to_send(now)
        if not packets:
            return
        header = bytes((nw.PAYLOAD_CHANNEL,)) + link.incarnation + link.peer_incarnation
        assert session is not None
        for packet in packets:
            datagram = session.seal(header + packet, now)
            if datagram is not None:
                self._send(datagram, addr)
        link.path.on_sent(now)

    # --- port prediction (tunnel.birthday) -----------------------------------------------------

    def _peer_public_ip(self, link: PeerLink) -> str | None:
        for candidate in link.path.candidates.values():
            if candidate.kind == Kind.PUBLIC:
                return candidate.addr[0]
        return None

    def _birthday(self, link: PeerLink, direct: bool, now: float) -> None:
        """Drive a birthday punch on either side: open and refresh, or probe, until it works."""
        path = link.path.path
        if (self.nat_mapping == "endpoint-dependent" and not link.birthday_tried
                and path is not None and not path.direct):
            public = next((c.addr for c in link.path.candidates.values()
                           if c.kind == Kind.PUBLIC), None)
            if public is not None:
                link.birthday_tried = True
                link.spray = SpraySockets(SOCKETS, public, self._on_datagram)
                self._routes.update(link.spray.routes)
                link.opener = Opener(now)
                log.info("our NAT randomizes ports: %d extra sockets toward %s, asking %s to "
                         "probe them", len(link.spray.sockets), public, fingerprint(link.static))
                self._seal_to(link, bytes((nw.PAYLOAD_BIRTHDAY,)), relay_addr(link.static), now)
        if link.opener is not None and link.spray is not None:
            if direct or link.opener.expired(now):
                self._end_spray(link)
            elif link.opener.send_due(now):
                for target in link.spray.targets():
                    self._send_ping(link, target, now)
        if link.prober is not None:
            if direct:
                link.prober.stop()
            for addr in link.prober.due(now):
                self._send_ping(link, addr, now)
            if link.prober.stopped:
                log.info("birthday probing of %s ended after %d pings (%s)",
                         fingerprint(link.static), link.prober.sent,
                         "direct path found" if direct else "no port answered")
                link.prober = None

    def _start_probing(self, link: PeerLink, now: float) -> None:
        """The peer's NAT randomizes ports and it opened sockets to us: guess its ports."""
        path = link.path.path
        target = self._peer_public_ip(link)
        if (link.prober is not None or target is None or self.nat_mapping == "endpoint-dependent"
                or (path is not None and path.direct)):
            return  # already probing, nowhere to probe, or both sides randomize: no chance
        link.prober = Prober(target, now, os.urandom)
        log.info("probing random ports of %s for %s (birthday punch)", target,
                 fingerprint(link.static))

    def _end_spray(self, link: PeerLink) -> None:
        assert link.spray is not None
        path = link.path.path
        winner = path.addr if path is not None and path.direct else None
        for pseudo in link.spray.routes:
            self._routes.pop(pseudo, None)
        if winner is not None and winner in link.spray.routes:
            link.spray.keep_only(winner)
            self._routes.update(link.spray.routes)
            log.info("birthday punch to %s succeeded through %s", fingerprint(link.static),
                     winner)
        else:
            link.spray.close()
            link.spray = None
        link.opener = None

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = monotonic()
        peers = []
        for link in self.links.values():
            stats = link.channel.stats() if link.channel is not None else None
            peers.append({
                "name": link.name,
                "fingerprint": fingerprint(link.static),
                "path": link.describe_path(),
                "direct": bool(link.path.path and link.path.path.direct),
                "rtt_ms": None if link.rtt is None else round(link.rtt * 1e3, 3),
                "bytes_sent": stats.stream_bytes_sent if stats else 0,
                "bytes_received": stats.stream_bytes_received if stats else 0,
                "open_streams": stats.open_streams if stats else 0,
                "connected_for_s": None if link.connected_at is None
                else round(now - link.connected_at, 1),
                "candidates": [
                    {"addr": f"{r.addr[0]}:{r.addr[1]}", "kind": r.kind, "probes": r.probes_sent,
                     "working": r.working, "rtt_ms": r.rtt_ms}
                    for r in link.path.report(now)
                ],
            })
        return {
            "pid": os.getpid(),
            "fingerprint": fingerprint(self.options.identity.public),
            "names": list(self.options.names),
            "public_endpoint": None if self.public_endpoint is None
            else f"{self.public_endpoint[0]}:{self.public_endpoint[1]}",
            "uptime_s": round(now - self.started, 1),
            "peers": peers,
            "drops": {k: v for k, v in dataclasses.asdict(self.device.counters).items() if v},
        }
