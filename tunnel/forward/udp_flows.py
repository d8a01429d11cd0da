"""Forwarded UDP: the local listener of the connecting side and the per-flow sockets of the
exposing side.

Datagrams become channel datagrams tagged with the service name and a flow id per local source
address (`tunnel.forward.wire`), so replies find their way back to the local address that sent
the request. Each flow has its own socket to the service on the exposing side, and a flow on either
side expires after `UDP_IDLE_TIMEOUT` without traffic. Like UDP itself, nothing here
retransmits: a datagram the channel cannot take is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol, cast

from tunnel.addresses import Addr
from tunnel.forward import wire
from tunnel.node.node import Node
from tunnel.node.peer import Peer
from tunnel.node.udp import monotonic

log = logging.getLogger(__name__)

UDP_IDLE_TIMEOUT: Final = 60.0  # s; like conntrack's UDP stream timeout, long enough for game pings
UDP_SWEEP_INTERVAL: Final = 10.0  # s
MAX_UDP_FLOWS: Final = 4096  # per service; bounds memory when a local app sprays source ports


class FlowOwner(Protocol):
    """What the UDP side needs from the forwarder: the node, kicked after queueing a datagram."""

    node: Node


class UdpFlowSocket(asyncio.DatagramProtocol):
    """Exposing side: one socket to the service per (peer, flow)."""

    def __init__(self, forwarder: FlowOwner, link: Peer, name: str, flow: int) -> None:
        self.forwarder, self.link, self.name, self.flow = forwarder, link, name, flow
        self.transport: asyncio.DatagramTransport | None = None
        self.last_used = monotonic()
        self.backlog: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: cast, don't check.
        udp = self.transport = cast(asyncio.DatagramTransport, transport)
        for payload in self.backlog:
            udp.sendto(payload)
        self.backlog.clear()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.last_used = monotonic()
        channel = self.link.channel
        if channel is not None:
            channel.send_datagram(wire.encode_udp(self.name, self.flow, data))
            self.forwarder.node.kick(self.link)

    def send(self, payload: bytes) -> None:
        self.last_used = monotonic()
        if self.transport is None:
            if len(self.backlog) < 64:
                self.backlog.append(payload)
        else:
            self.transport.sendto(payload)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp service %s: %s", self.name, exc)


class UdpListener(asyncio.DatagramProtocol):
    """Connecting side: a local UDP port whose datagrams go to one remote service."""

    def __init__(self, forwarder: FlowOwner, name: str) -> None:
        self.forwarder, self.name = forwarder, name
        self.link: Peer | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[Addr, int] = {}
        self.sources: dict[int, tuple[Addr, float]] = {}
        self.next_flow = 1
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: cast, don't check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.forwarder.node.catch_up()  # not onto a channel that died while the process slept
        source = (addr[0], addr[1])
        flow = self.flows.get(source)
        if flow is None:
            # the exposing side takes no more flows per service than it announced
            limit = MAX_UDP_FLOWS if self.link is None else self.link.peer_params.max_udp_flows
            if len(self.flows) >= min(MAX_UDP_FLOWS, limit):
                self.dropped += 1
                return
            flow = self.flows[source] = self.next_flow
            self.next_flow += 1
        self.sources[flow] = (source, monotonic())
        channel = self.link.channel if self.link is not None else None
        if channel is None or not channel.send_datagram(wire.encode_udp(self.name, flow, data)):
            self.dropped += 1
            return
        self.forwarder.node.kick(self.link)

    def deliver(self, flow: int, payload: bytes) -> None:
        entry = self.sources.get(flow)
        if entry is not None and self.transport is not None:
            self.sources[flow] = (entry[0], monotonic())
            self.transport.sendto(payload, entry[0])

    def expire_idle_flows(self, now: float) -> None:
        for flow, (source, used) in list(self.sources.items()):
            if now - used > UDP_IDLE_TIMEOUT:
                del self.sources[flow]
                self.flows.pop(source, None)
