"""The Forwarder: routes every channel event of every peer to what it is for.

Stream events go to the `StreamBridge` of that stream, or, for a stream a peer opened whose
bridge does not exist yet, to the exposing side (`tunnel.forward.exposing`). Datagrams go to the
local `UdpListener` that asked that peer for the service named in them, otherwise to the exposing
side. The forwarder also owns the asyncio tasks of forwarding (dials, UDP flow sockets, the idle
sweep) so they are kept alive while running and cancelled or closed with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

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
from tunnel.forward.bridge import StreamBridge, reset_tcp
from tunnel.forward.exposing import ExposedService, ExposingSide
from tunnel.forward.sockets import SocketBudget, descriptor_limit
from tunnel.forward.udp_flows import UDP_SWEEP_INTERVAL, UdpListener
from tunnel.node.node import Node
from tunnel.node.peer import Peer
from tunnel.node.udp import monotonic

log = logging.getLogger(__name__)


class Forwarder:
    """Routes every channel event of every peer to the bridge, service or listener it is for."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.bridges: dict[tuple[bytes, int], StreamBridge] = {}
        self.sockets = SocketBudget(descriptor_limit())
        self.udp_listeners: dict[str, UdpListener] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.exposing = ExposingSide(self, self._spawn)
        node.on_new_peer = self._adopt
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def services(self) -> dict[str, ExposedService]:
        """The services this node exposes, by name (the API adds and removes them here)."""
        return self.exposing.services

    def _adopt(self, link: Peer) -> None:
        link.on_event = self.dispatch

    def start(self) -> None:
        # Again: the CLI raises the descriptor limit after the tunnel is made, before it starts.
        self.sockets.set_limit(descriptor_limit())
        log.debug("forwarding may hold %d sockets (descriptor limit %d)", self.sockets.budget,
                  self.sockets.limit)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_udp())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for bridge in list(self.bridges.values()):
            if bridge.transport is not None:
                reset_tcp(bridge.transport)
        self.exposing.close_flows()

    def dispatch(self, link: Peer, event: ChannelEvent) -> None:
        if isinstance(event, StreamReadable | StreamWritable):
            key = (link.static, event.stream_id)
            bridge = self.bridges.get(key)
            if bridge is not None:
                if isinstance(event, StreamReadable):
                    bridge.on_readable()
                else:
                    bridge.on_writable()
            elif isinstance(event, StreamReadable):
                self.exposing.on_stream_readable(key)
        elif isinstance(event, StreamOpened):
            self.exposing.on_stream_opened(link, event.stream_id)
        elif isinstance(event, StreamReset | StreamStopped):
            self.exposing.on_stream_ended((link.static, event.stream_id))
            bridge = self.bridges.get((link.static, event.stream_id))
            if bridge is not None:
                bridge.on_reset(event.error_code)
        elif isinstance(event, DatagramReceived):
            self._datagram(link, event.data)
        elif isinstance(event, ChannelClosed):
            # The closed channel's streams end; a bridge already on the peer's new channel
            # (after a restart) stays.
            for (peer, _sid), bridge in list(self.bridges.items()):
                channel = bridge.channel()
                if peer == link.static and (channel is None or not channel.is_open):
                    bridge.on_reset(wire.RESET_ABORTED)
            self.exposing.on_channel_closed(link.static)

    def _datagram(self, link: Peer, data: bytes) -> None:
        decoded = wire.decode_udp(data)
        if decoded is None:
            return
        name, flow, payload = decoded
        listener = self.udp_listeners.get(name)
        if listener is not None and listener.link is link:
            listener.deliver(flow, payload)
            return
        self.exposing.on_datagram(link, name, flow, payload)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run a task and keep a reference until it ends (the loop holds only weak ones)."""
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_udp(self) -> None:
        while True:
            await asyncio.sleep(UDP_SWEEP_INTERVAL)
            now = monotonic()
            self.exposing.expire_idle_flows(now)
            for listener in self.udp_listeners.values():
                listener.expire_idle_flows(now)
