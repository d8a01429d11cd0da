"""A node that wakes runs its overdue timers before it acts on input (`Node.catch_up`).

The event loop's timers run on CLOCK_MONOTONIC, which stops while a machine is suspended; the
node's clock (CLOCK_BOOTTIME) does not. So after a night asleep the loop's timer for the node's
next deadline is still seconds away, while by the node's clock its channels died hours ago: the
first datagram or local connection on waking must not find them alive. A `Node` without a socket
and real handshakes in memory, woken at a clock 45 s ahead of the loop's."""

from __future__ import annotations

import asyncio
import os
import time

from tests.node.test_node_params import PEER_ADDR, exchange
from tests.support.socketless_node import NODE_ADDR, replies, socketless_node
from tunnel.channel.constants import IDLE_TIMEOUT
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import handshake_psk
from tunnel.node.payloads import PAYLOAD_CHANNEL
from tunnel.node.udp import OVERDUE, monotonic
from tunnel.session.device import Device


def test_input_on_waking_meets_the_channels_that_died_in_the_sleep_as_dead() -> None:
    async def main() -> None:
        secret = os.urandom(32)
        node = socketless_node(secret)
        initiator = Device(Identity.generate().private, handshake_psk(secret))
        initiator.connect(node.options.identity.public, [PEER_ADDR], monotonic(), time.time())
        exchange(node, initiator)
        peer = node.peers[initiator.public_key]
        channel = peer.channel
        assert channel is not None and channel.is_open

        replies(node, PEER_ADDR)
        node._catch_up(monotonic() + OVERDUE / 2)  # a loop a little late: nothing to catch up
        assert replies(node, PEER_ADDR) == []

        asleep = monotonic() + IDLE_TIMEOUT + 15  # the node's clock on waking; the loop's is not
        node._catch_up(asleep)
        # What was due meanwhile ran before any input: the channel's keepalive PING went out.
        woke = replies(node, PEER_ADDR)
        assert woke, "nothing ran"
        payloads = [initiator.receive(data, NODE_ADDR, monotonic(), time.time())
                    for data in woke]
        assert any(p is not None and p[1][:1] == bytes((PAYLOAD_CHANNEL,)) for p in payloads)
        await node.close()

    asyncio.run(main())
