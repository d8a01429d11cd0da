"""The exposing side: streams and datagrams that peers send to the services this node exposes.

A stream a peer opens carries an open header naming the service (`tunnel.forward.wire`); until
the whole header has arrived the stream waits here. Then the service's allow list is checked,
a `StreamBridge` is attached and the service is dialled; a stream for an unknown or UDP-only
service, from a node not on the allow list, or one whose dial fails is reset with the matching
`RESET_*` code so the connecting side can say why. A datagram for a UDP service goes out through
that (peer, flow)'s own `UdpFlowSocket`, opened on first use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tunnel.addresses import Addr, format_endpoint
from tunnel.channel.channel import Channel
from tunnel.forward import wire
from tunnel.forward.bridge import BridgeOwner, StreamBridge
from tunnel.forward.udp_flows import MAX_UDP_FLOWS, UDP_IDLE_TIMEOUT, UdpFlowSocket
from tunnel.keys.netkeys import fingerprint
from tunnel.node.peer import Peer
from tunnel.node.udp import monotonic

log = logging.getLogger(__name__)


@dataclass
class ExposedService:
    name: str
    target: Addr
    udp: bool = False
    allow: frozenset[bytes] | None = None  # None: every member allowed by the node
    streams: int = 0
    refused: int = 0


@dataclass
class _Incoming:
    """A stream the peer opened whose open header has not fully arrived yet."""

    link: Peer
    stream_id: int
    channel: Channel  # the channel `stream_id` belongs to
    header: bytearray = field(default_factory=bytearray)

    def current(self) -> Channel | None:
        """The stream's channel while the peer still uses it (see `StreamBridge.channel`)."""
        return self.channel if self.link.channel is self.channel else None


class ExposingSide:
    """Admits the peers' streams and datagrams to the exposed services, or refuses them."""

    def __init__(self, owner: BridgeOwner,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.owner = owner
        self._spawn = spawn  # runs a dial or a flow's socket setup as a task the owner keeps
        self.services: dict[str, ExposedService] = {}
        self.incoming: dict[tuple[bytes, int], _Incoming] = {}
        self.udp_flows: dict[tuple[bytes, str, int], UdpFlowSocket] = {}
        self._bridges: dict[str, set[StreamBridge]] = {}  # per service, for `live`

    def live(self, name: str) -> int:
        """Connections (TCP) or flows (UDP) open now to the service `name`."""
        bridges = self._bridges.get(name, set())
        bridges -= {bridge for bridge in bridges if bridge.closed}
        return len(bridges) + sum(1 for key in self.udp_flows if key[1] == name)

    # --- events routed here by the forwarder --------------------------------------------------

    def on_stream_opened(self, link: Peer, stream_id: int) -> None:
        if link.channel is None:
            return
        incoming = _Incoming(link, stream_id, link.channel)
        self.incoming[(link.static, stream_id)] = incoming
        self._read_header(incoming)

    def on_stream_readable(self, key: tuple[bytes, int]) -> None:
        """More of a stream that has no bridge yet: perhaps the rest of its open header."""
        incoming = self.incoming.get(key)
        if incoming is not None:
            self._read_header(incoming)

    def on_stream_ended(self, key: tuple[bytes, int]) -> None:
        """The peer reset or stopped a stream: stop waiting for its header, if still waiting."""
        self.incoming.pop(key, None)

    def on_channel_closed(self, peer: bytes) -> None:
        self.incoming = {k: v for k, v in self.incoming.items()
                         if k[0] != peer or ((c := v.current()) is not None and c.is_open)}

    def on_datagram(self, link: Peer, name: str, flow: int, payload: bytes) -> None:
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
            if not self.owner.sockets.acquire(
                    monotonic(), f"a UDP flow from {fingerprint(link.static)} for {name}"):
                return  # UDP has no reset: the datagram is dropped, as a full queue would
            sock = self.udp_flows[key] = UdpFlowSocket(self.owner, link, name, flow)
            self._spawn(self._open_flow(key, sock, service.target))
        sock.send(payload)

    # --- upkeep -------------------------------------------------------------------------------

    def expire_idle_flows(self, now: float) -> None:
        for key, sock in list(self.udp_flows.items()):
            if now - sock.last_used > UDP_IDLE_TIMEOUT:
                del self.udp_flows[key]
                self.owner.sockets.release()
                if sock.transport is not None:
                    sock.transport.close()

    def close_flows(self) -> None:
        for flow in self.udp_flows.values():
            self.owner.sockets.release()
            if flow.transport is not None:
                flow.transport.close()
        self.udp_flows.clear()

    # --- streams ------------------------------------------------------------------------------

    def _read_header(self, incoming: _Incoming) -> None:
        channel = incoming.current()
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
        bridge = StreamBridge(self.owner)
        if not bridge.take_socket(f"a stream from {fingerprint(incoming.link.static)} for "
                                  f"{name}"):
            service.refused += 1
            self._refuse(incoming, wire.RESET_TOO_MANY_CONNECTIONS,
                         f"{name}: too many connections", quiet=True)
            return
        service.streams += 1
        bridge.attach(incoming.link, incoming.stream_id)
        live = self._bridges.setdefault(name, set())
        live -= {other for other in live if other.closed}  # bounded by the open connections
        live.add(bridge)
        bridge.early = rest
        self._spawn(self._dial(service, bridge))

    async def _dial(self, service: ExposedService, bridge: StreamBridge) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: bridge, *service.target)
        except OSError as exc:
            service.refused += 1
            assert bridge.link is not None and bridge.stream_id is not None
            log.warning("%s: cannot connect to %s for %s: %s", service.name,
                        format_endpoint(service.target), fingerprint(bridge.link.static),
                        exc.strerror or exc)
            channel = bridge.channel()
            if channel is not None:
                channel.reset_stream(bridge.stream_id, wire.RESET_CONNECTION_REFUSED)
                channel.stop_reading(bridge.stream_id, wire.RESET_CONNECTION_REFUSED)
            bridge.closed = True
            bridge.release_socket()
            bridge._forget()
            self.owner.node.kick(bridge.link)
            return
        bridge.on_readable()
        if bridge.transport is not None:
            bridge.transport.resume_reading()

    def _refuse(self, incoming: _Incoming, code: int, why: str, quiet: bool = False) -> None:
        """Reset the stream with `code`; `quiet`: the caller logged it (once per burst)."""
        if not quiet:
            log.warning("refused a stream from %s: %s", fingerprint(incoming.link.static), why)
        self.incoming.pop((incoming.link.static, incoming.stream_id), None)
        channel = incoming.current()
        if channel is not None:
            channel.reset_stream(incoming.stream_id, code)
            channel.stop_reading(incoming.stream_id, code)
        self.owner.node.kick(incoming.link)

    # --- datagrams ----------------------------------------------------------------------------

    async def _open_flow(self, key: tuple[bytes, str, int], sock: UdpFlowSocket,
                         target: Addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: sock, remote_addr=target)
        except OSError as exc:
            log.warning("%s: cannot reach UDP service %s: %s", sock.name,
                        format_endpoint(target), exc.strerror or exc)
            if self.udp_flows.pop(key, None) is not None:
                self.owner.sockets.release()
