"""The node's links are capped and follow their sessions out (issue 12, finding 6).

A `Node` without a socket (an in-memory wire) takes real handshakes from initiators with fresh
static keys, as a member minting keys would send them.
"""

from __future__ import annotations

import asyncio
import os
import time

from tests.support.socketless_node import NODE_ADDR, replies, socketless_node, to_node
from tunnel.addresses import Addr
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import handshake_psk
from tunnel.node.node import Node
from tunnel.node.udp import monotonic
from tunnel.session.constants import REKEY_ATTEMPT_TIME, SESSION_IDLE_LIMIT
from tunnel.session.device import Device


def handshake_with(node: Node, secret: bytes, count: int) -> None:
    """`count` fresh keys each complete a handshake with the node (initiation, response,
    keepalive), one after the other."""
    for i in range(count):
        initiator = Device(Identity.generate().private, handshake_psk(secret))
        addr: Addr = ("198.51.100.7", 2000 + i)
        initiator.connect(node.options.identity.public, [NODE_ADDR], monotonic(), time.time())
        to_node(node, initiator, addr)
        for data in replies(node, addr):
            initiator.receive(data, NODE_ADDR, monotonic(), time.time())
            initiator.handle_timer(monotonic(), time.time())
        to_node(node, initiator, addr)


def test_links_are_capped_and_leave_with_their_idle_sessions() -> None:
    async def main() -> None:
        secret = os.urandom(32)
        node = socketless_node(secret, max_peers=4)
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
