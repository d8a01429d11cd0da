"""Local TCP and UDP <-> channel streams and datagrams: the forwarding half of the shell.

TCP: every local connection is one channel stream. Bytes flow with backpressure both ways: when
the channel's send buffer is full the TCP socket stops being read, and when the local socket's
write buffer is full the stream stops being read (so the peer's flow-control credit stops
growing). Half-close maps to FIN and back (`shutdown(SHUT_WR)` on one end reaches the other end as
EOF while the reply keeps flowing); an abort (RST) on one end resets the stream and aborts the
other end.

UDP: datagrams become channel datagrams tagged with the service name and a flow id per local
source address; each flow has its own socket to the service on the exposing side and expires
after `UDP_IDLE_TIMEOUT` without traffic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from tunnel.addresses import Addr
from tunnel.channel.channel import Channel
from tunnel.channel.events import (
    ChannelClosed,
    ChannelEvent,
    DatagramReceived,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
    StreamWritable,
)
from tunnel.forward import wire
from tunnel.keys.netkeys import fingerprint
from tunnel.node.node import Node
from tunnel.node.peer import PeerLink
from tunnel.node.udp import monotonic

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024  # bytes taken from a stream per read
TCP_WRITE_HIGH_WATER = 1024 * 1024  # bytes buffered toward a local socket before pausing
UDP_IDLE_TIMEOUT = 60.0  # s; like conntrack's UDP stream timeout, long enough for game pings
UDP_SWEEP_INTERVAL = 10.0  # s
MAX_UDP_FLOWS = 4096  # per service; bounds memory when a local app sprays source ports


@dataclass
class ExposedService:
    name: str
    target: Addr
    udp: bool = False
    allow: frozenset[bytes] | None = None  # None: every member allowed by the node
    streams: int = 0
    refused: int = 0


class StreamBridge(asyncio.Protocol):
    """One local TCP connection joined to one channel stream."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport | None = None
        self.link: PeerLink | None = None
        self.stream_id: int | None = None
        self.pending = bytearray()  # from TCP, not yet taken by the stream
        self.tcp_eof = False  # the local side shut down its writing half
        self.fin_sent = False
        self.stream_eof = False  # the peer's FIN was passed on to the local side
        self.paused_writing = False
        self.closed = False
        self.on_attach: Callable[[StreamBridge], None] | None = None

    # --- joining a stream ---------------------------------------------------------------------

    def attach(self, link: PeerLink, stream_id: int, first: bytes = b"") -> None:
        self.link, self.stream_id = link, stream_id
        self.forwarder.bridges[(link.static, stream_id)] = self
        if first:
            self.pending[:0] = first
        self._flush_pending()
        if self.transport is not None and not self.pending:
            self.transport.resume_reading()
        self.on_readable()

    # --- the local TCP side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: cast, don't check.
        tcp = self.transport = cast(asyncio.Transport, transport)
        tcp.set_write_buffer_limits(high=TCP_WRITE_HIGH_WATER)
        if self.stream_id is None:
            tcp.pause_reading()  # until a stream is attached
        if self.on_attach is not None:
            self.on_attach(self)

    def data_received(self, data: bytes) -> None:
        if self.pending or self.stream_id is None:
            self.pending += data
        else:
            channel = self._channel()
            taken = channel.write(self.stream_id, data) if channel is not None else 0
            if taken < len(data):
                self.pending += data[taken:]
        if self.pending and self.transport is not None:
            self.transport.pause_reading()
        self.forwarder.node.kick()

    def eof_received(self) -> bool:
        self.tcp_eof = True
        self._maybe_fin()
        self._maybe_close()
        return True  # keep the writing half open: the reply may still be coming (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        channel = self._channel()
        if channel is not None and self.stream_id is not None:
            if exc is not None or not self.tcp_eof:
                # An abort (or a close before our FIN went out): abort the peer's end too.
                channel.reset_stream(self.stream_id, wire.RESET_ABORTED)
            channel.stop_reading(self.stream_id, wire.RESET_ABORTED)
            self.forwarder.node.kick()
        self._forget()

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        self.on_readable()

    # --- the channel side ---------------------------------------------------------------------

    def on_readable(self) -> None:
        channel = self._channel()
        if channel is None or self.transport is None or self.stream_id is None:
            return
        while not self.paused_writing and not self.transport.is_closing():
            data = channel.read(self.stream_id, READ_CHUNK)
            if not data:
                break
            self.transport.write(data)
        if not self.stream_eof and channel.is_eof(self.stream_id):
            self.stream_eof = True
            if self.transport.can_write_eof() and not self.transport.is_closing():
                self.transport.write_eof()
        self._maybe_close()
        self.forwarder.node.kick()

    def on_writable(self) -> None:
        self._flush_pending()
        if not self.pending and self.transport is not None and not self.tcp_eof:
            self.transport.resume_reading()
        self._maybe_fin()

    def on_reset(self, code: int) -> None:
        log.info("stream %s reset by peer: %s", self.stream_id, wire.reset_reason(code))
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._forget()

    # --- internals ----------------------------------------------------------------------------

    def _channel(self) -> Channel | None:
        return self.link.channel if self.link is not None else None

    def _flush_pending(self) -> None:
        channel = self._channel()
        if channel is None or self.stream_id is None or not self.pending:
            return
        taken = channel.write(self.stream_id, self.pending)
        del self.pending[:taken]
        self.forwarder.node.kick()

    def _maybe_fin(self) -> None:
        channel = self._channel()
        if (self.tcp_eof and not self.pending and not self.fin_sent
                and channel is not None and self.stream_id is not None):
            self.fin_sent = True
            channel.shutdown_write(self.stream_id)
            self.forwarder.node.kick()

    def _maybe_close(self) -> None:
        if self.tcp_eof and self.stream_eof and self.fin_sent and self.transport is not None:
            self.closed = True
            self.transport.close()
            self._forget()

    def _forget(self) -> None:
        if self.link is not None and self.stream_id is not None:
            self.forwarder.bridges.pop((self.link.static, self.stream_id), None)


@dataclass
class _Incoming:
    """A stream the peer opened whose open header has not fully arrived yet."""

    link: PeerLink
    stream_id: int
    header: bytearray = field(default_factory=bytearray)


class UdpFlowSocket(asyncio.DatagramProtocol):
    """Exposing side: one socket to the service per (peer, flow)."""

    def __init__(self, forwarder: Forwarder, link: PeerLink, name: str, flow: int) -> None:
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
            self.forwarder.node.kick()

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

    def __init__(self, forwarder: Forwarder, name: str) -> None:
        self.forwarder, self.name = forwarder, name
        self.link: PeerLink | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[Addr, int] = {}
        self.sources: dict[int, tuple[Addr, float]] = {}
        self.next_flow = 1
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: cast, don't check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        source = (addr[0], addr[1])
        flow = self.flows.get(source)
        if flow is None:
            if len(self.flows) >= MAX_UDP_FLOWS:
                self.dropped += 1
                return
            flow = self.flows[source] = self.next_flow
            self.next_flow += 1
        self.sources[flow] = (source, monotonic())
        channel = self.link.channel if self.link is not None else None
        if channel is None or not channel.send_datagram(wire.encode_udp(self.name, flow, data)):
            self.dropped += 1
            return
        self.forwarder.node.kick()

    def deliver(self, flow: int, payload: bytes) -> None:
        entry = self.sources.get(flow)
        if entry is not None and self.transport is not None:
            self.sources[flow] = (entry[0], monotonic())
            self.transport.sendto(payload, entry[0])


class Forwarder:
    """Routes every channel event of every peer to the bridge, service or listener it is for."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.services: dict[str, ExposedService] = {}
        self.bridges: dict[tuple[bytes, int], StreamBridge] = {}
        self.incoming: dict[tuple[bytes, int], _Incoming] = {}
        self.udp_listeners: dict[str, UdpListener] = {}
        self.udp_flows: dict[tuple[bytes, str, int], UdpFlowSocket] = {}
        node.on_new_link = self._adopt
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _adopt(self, link: PeerLink) -> None:
        link.on_event = self.dispatch

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_udp())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for bridge in list(self.bridges.values()):
            if bridge.transport is not None:
                bridge.transport.abort()
        for flow in self.udp_flows.values():
            if flow.transport is not None:
                flow.transport.close()

    def dispatch(self, link: PeerLink, event: ChannelEvent) -> None:
        if isinstance(event, StreamReadable | StreamWritable):
            key = (link.static, event.stream_id)
            bridge = self.bridges.get(key)
            if bridge is not None:
                if isinstance(event, StreamReadable):
                    bridge.on_readable()
                else:
                    bridge.on_writable()
            elif key in self.incoming and isinstance(event, StreamReadable):
                self._read_header(self.incoming[key])
        elif isinstance(event, StreamOpened):
            incoming = _Incoming(link, event.stream_id)
            self.incoming[(link.static, event.stream_id)] = incoming
            self._read_header(incoming)
        elif isinstance(event, StreamReset | StreamStopped):
            self.incoming.pop((link.static, event.stream_id), None)
            bridge = self.bridges.get((link.static, event.stream_id))
            if bridge is not None:
                bridge.on_reset(event.error_code)
        elif isinstance(event, DatagramReceived):
            self._datagram(link, event.data)
        elif isinstance(event, ChannelClosed):
            for (peer, _sid), bridge in list(self.bridges.items()):
                if peer == link.static:
                    bridge.on_reset(wire.RESET_ABORTED)
            self.incoming = {k: v for k, v in self.incoming.items() if k[0] != link.static}

    # --- exposing side ------------------------------------------------------------------------

    def _read_header(self, incoming: _Incoming) -> None:
        channel = incoming.link.channel
        if channel is None:
            return
        incoming.header += channel.read(incoming.stream_id, 2 + wire.MAX_NAME_LENGTH)
        try:
            parsed = wire.decode_open(bytes(incoming.header))
        except wire.ForwardDecodeError:
            self._refuse(incoming, wire.RESET_UNKNOWN_SERVICE, "malformed stream header")
            return
        if parsed is None:
            if channel.is_eof(incoming.stream_id):
                self.incoming.pop((incoming.link.static, incoming.stream_id), None)
            return
        name, end = parsed
        del self.incoming[(incoming.link.static, incoming.stream_id)]
        rest = bytes(incoming.header[end:])
        service = self.services.get(name)
        if service is None or service.udp:
            self._refuse(incoming, wire.RESET_UNKNOWN_SERVICE, f"no TCP service named {name!r}")
            return
        if service.allow is not None and incoming.link.static not in service.allow:
            service.refused += 1
            self._refuse(incoming, wire.RESET_NOT_ALLOWED, f"{name}: not on the allow list")
            return
        service.streams += 1
        bridge = StreamBridge(self)
        bridge.attach(incoming.link, incoming.stream_id)
        self._spawn(self._dial(service, bridge, rest))

    async def _dial(self, service: ExposedService, bridge: StreamBridge, rest: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: bridge, *service.target)
        except OSError as exc:
            service.refused += 1
            assert bridge.link is not None and bridge.stream_id is not None
            log.warning("%s: cannot connect to %s:%d for %s: %s", service.name, *service.target,
                        fingerprint(bridge.link.static), exc.strerror or exc)
            channel = bridge.link.channel
            if channel is not None:
                channel.reset_stream(bridge.stream_id, wire.RESET_CONNECTION_REFUSED)
                channel.stop_reading(bridge.stream_id, wire.RESET_CONNECTION_REFUSED)
            bridge.closed = True
            bridge._forget()
            self.node.kick()
            return
        if rest and bridge.transport is not None:
            bridge.transport.write(rest)
        bridge.on_readable()
        if bridge.transport is not None:
            bridge.transport.resume_reading()

    def _refuse(self, incoming: _Incoming, code: int, why: str) -> None:
        log.warning("refused a stream from %s: %s", fingerprint(incoming.link.static), why)
        self.incoming.pop((incoming.link.static, incoming.stream_id), None)
        channel = incoming.link.channel
        if channel is not None:
            channel.reset_stream(incoming.stream_id, code)
            channel.stop_reading(incoming.stream_id, code)
        self.node.kick()

    def _datagram(self, link: PeerLink, data: bytes) -> None:
        decoded = wire.decode_udp(data)
        if decoded is None:
            return
        name, flow, payload = decoded
        listener = self.udp_listeners.get(name)
        if listener is not None and listener.link is link:
            listener.deliver(flow, payload)
            return
        service = self.services.get(name)
        if service is None or not service.udp:
            return
        if service.allow is not None and link.static not in service.allow:
            return
        key = (link.static, name, flow)
        sock = self.udp_flows.get(key)
        if sock is None:
            if sum(1 for k in self.udp_flows if k[1] == name) >= MAX_UDP_FLOWS:
                return
            sock = self.udp_flows[key] = UdpFlowSocket(self, link, name, flow)
            self._spawn(self._open_flow(key, sock, service.target))
        sock.send(payload)

    async def _open_flow(self, key: tuple[bytes, str, int], sock: UdpFlowSocket,
                         target: Addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: sock, remote_addr=target)
        except OSError as exc:
            log.warning("%s: cannot reach UDP service %s:%d: %s", sock.name, *target,
                        exc.strerror or exc)
            self.udp_flows.pop(key, None)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run a task and keep a reference until it ends (the loop holds only weak ones)."""
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_udp(self) -> None:
        while True:
            await asyncio.sleep(UDP_SWEEP_INTERVAL)
            now = monotonic()
            for key, sock in list(self.udp_flows.items()):
                if now - sock.last_used > UDP_IDLE_TIMEOUT:
                    del self.udp_flows[key]
                    if sock.transport is not None:
                        sock.transport.close()
            for listener in self.udp_listeners.values():
                for flow, (source, used) in list(listener.sources.items()):
                    if now - used > UDP_IDLE_TIMEOUT:
                        del listener.sources[flow]
                        listener.flows.pop(source, None)
