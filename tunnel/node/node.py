"""A running node: one UDP socket shared by the secure sessions, the rendezvous client, the path
managers and the channels of every peer. This is the asyncio shell around the sans-IO machines.

Everything that arrives (a datagram, a timer, a local TCP write) only feeds a machine and asks for
a *flush*; one flush per event-loop turn then drains every machine's events and outgoing
datagrams and re-arms the single timer. That batches work per turn instead of per packet.

Inside a session's encrypted payloads (see `tunnel.node.payloads`), channel packets carry the
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
from dataclasses import dataclass
from typing import Any

from rendezvous import protocol as rp
from tunnel.addresses import Addr, is_relay, relay_addr, relay_peer
from tunnel.channel.channel import Channel
from tunnel.channel.events import ChannelClosed, ChannelEvent
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import fingerprint, handshake_psk
from tunnel.node import payloads as nw
from tunnel.node.peer import (
    CHANNEL_HEADER,
    REPUNCH_FIRST,
    REPUNCH_MAX,
    PeerLink,
    channel_budget,
)
from tunnel.node.prediction import BirthdayPunch
from tunnel.node.udp import Timer, UdpEndpoint, monotonic
from tunnel.path import rendezvous as rc
from tunnel.path.manager import Kind, PathChanged, PathManager, RepunchNeeded
from tunnel.session.device import Device
from tunnel.session.events import (
    HandshakeCompleted,
    HandshakeFailed,
    SessionExpired,
)
from tunnel.session.session import SessionConfig
from tunnel.session.wire import SESSION_MESSAGE_TYPES, TRANSPORT_OVERHEAD

log = logging.getLogger(__name__)

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
        self._nat_check: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        self.rdv_events: list[Callable[[rc.Event], None]] = []
        self.on_new_link: Callable[[PeerLink], None] | None = None
        self._timer = Timer(self._on_timer)
        self._outbox: dict[Addr, list[bytes]] = {}
        self._routes: dict[Addr, tuple[UdpEndpoint, Addr]] = {}  # pseudo addr -> socket, addr
        self.birthday = BirthdayPunch(self)
        self._flush_scheduled = False
        self._in_flush = False
        self._delivering = False
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
        self._nat_check = asyncio.get_running_loop().create_task(self._check_nat())

    async def _check_nat(self) -> None:
        """Learn how our NAT maps ports; port prediction needs to know which side randomizes."""
        from tunnel.node.netcheck import netcheck

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
        if self._nat_check is not None:
            self._nat_check.cancel()
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
            # A forwarder acted during the flush. While a link's events are being delivered,
            # that link's packets are built right after: no second flush is needed for it.
            if not self._delivering:
                self._again = True
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
            self.birthday.on_request(link, now)
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
        """Expired timers of every machine; the flush then handles the device's own."""
        now = monotonic()
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
            data, addr = self.rdv.wrap_relay(relay_peer(addr), data), self.rdv.server
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
        # Transport data never comes this way: `_receive_session` takes it straight from
        # `Device.receive_transport` (the hot path), so there are no PayloadReceived events.
        while (event := self.device.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                link = self._link(event.peer_public, now)
                link.path.on_authenticated(None if is_relay(event.addr) else event.addr, now)
                if link.channel is None:
                    self._open_channel(link)
                self._notify(link)
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
            self.birthday.drive(link, direct, now)
        channel = link.channel
        if channel is None:
            return
        self._delivering = True
        try:
            while (channel_event := channel.next_event()) is not None:
                self._deliver(link, channel_event)
                if isinstance(channel_event, ChannelClosed):
                    self._notify(link)
        finally:
            self._delivering = False
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

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = monotonic()
        return {
            "pid": os.getpid(),
            "fingerprint": fingerprint(self.options.identity.public),
            "names": list(self.options.names),
            "public_endpoint": None if self.public_endpoint is None
            else f"{self.public_endpoint[0]}:{self.public_endpoint[1]}",
            "nat_mapping": self.nat_mapping,
            "uptime_s": round(now - self.started, 1),
            "peers": [link.status(now) for link in self.links.values()],
            "drops": {k: v for k, v in dataclasses.asdict(self.device.counters).items() if v},
        }
