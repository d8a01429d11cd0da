"""The node's links are capped and follow their sessions out (issue 12, finding 6).

A `Node` without a socket (an in-memory wire) takes real handshakes from initiators with fresh
static keys, as a member minting keys would send them.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import cast

from tunnel.addresses import Addr
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import handshake_psk
from tunnel.node.node import Node, NodeOptions
from tunnel.node.udp import UdpEndpoint, monotonic
from tunnel.session.constants import REKEY_ATTEMPT_TIME, SESSION_IDLE_LIMIT
from tunnel.session.device import Device

NODE_ADDR: Addr = ("10.0.0.1", 7001)


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Addr]] = []

    def send_batch(self, batch: list[bytes], addr: Addr) -> None:
        self.sent.extend((data, addr) for data in batch)

    def send_segments(self, data: bytes, segment: int, addr: Addr) -> None:
        """A GSO run: the datagrams it carries, one by one."""
        self.sent.extend((data[i:i + segment], addr) for i in range(0, len(data), segment))


def handshake_with(node: Node, secret: bytes, count: int) -> None:
    """`count` fresh keys each complete a handshake with the node (initiation, response,
    keepalive), one after the other."""
    for i in range(count):
        initiator = Device(Identity.generate().private, handshake_psk(secret))
        addr: Addr = ("198.51.100.7", 2000 + i)
        initiator.connect(node.options.identity.public, [NODE_ADDR], monotonic(), time.time())
        for data, _ in initiator.datagrams_to_send():
            node._receive_session(data, addr, monotonic())
        node._flush()
        wire = cast(Wire, node.udp)
        for data, dst in wire.sent:
            if dst == addr:
                initiator.receive(data, NODE_ADDR, monotonic(), time.time())
                initiator.handle_timer(monotonic(), time.time())
        wire.sent.clear()
        for data, _ in initiator.datagrams_to_send():
            node._receive_session(data, addr, monotonic())
        node._flush()


def test_links_are_capped_and_leave_with_their_idle_sessions() -> None:
    async def main() -> None:
        secret = os.urandom(32)
        node = Node(NodeOptions(identity=Identity.generate(), network_secret=secret,
                                rendezvous=("127.0.0.1", 9), max_peers=4))
        node.udp = cast(UdpEndpoint, Wire())
        handshake_with(node, secret, 10)
        assert len(node.device.sessions) == 4 and len(node.peers) == 4
        assert node.device.counters.session_limit == 6
        # The initiators fall silent: the node's data goes unanswered, its retries give up
        # (90 s), and once idle past the limit the sessions go, and with them the links
        # nobody asked for.
        start, wall = monotonic(), time.time()
        for step in range(0, int(REKEY_ATTEMPT_TIME + 2 * SESSION_IDLE_LIMIT), 5):
            node.device.handle_timer(start + step, wall + step)
            node.device.datagrams_to_send()
        node._flush()
        assert not node.device.sessions and not node.peers
        assert len(node._peer_timers) == 0
        node._timer.cancel()

    asyncio.run(main())
