"""The node builds each peer's channel from that peer's transport parameters, and shows why an
older peer's handshakes are refused (a `Node` without a socket, real handshakes in memory)."""

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
from tunnel.session import crypto, handshake, noise
from tunnel.session.cookie import CookieGenerator
from tunnel.session.device import OLD_VERSION_REASON, Device
from tunnel.session.params import CHACHA20_POLY1305, TransportParams
from tunnel.session.wire import HEADER_INITIATION

PEER_ADDR: Addr = ("198.51.100.7", 2000)
PEER_PARAMS = TransportParams(stream_window=64 * 1024, connection_window=96 * 1024,
                              max_streams=2, max_datagram=1400, ciphers=(CHACHA20_POLY1305,))


def exchange(node: Node, initiator: Device) -> None:
    """Move datagrams both ways until neither side has anything to send."""
    for _ in range(4):
        to_node(node, initiator, PEER_ADDR)
        for data in replies(node, PEER_ADDR):
            initiator.receive(data, NODE_ADDR, monotonic(), time.time())
        initiator.handle_timer(monotonic(), time.time())


def test_the_channel_sends_within_the_peers_limits_and_receives_within_ours() -> None:
    async def main() -> None:
        secret = os.urandom(32)
        node = socketless_node(secret)
        initiator = Device(Identity.generate().private, handshake_psk(secret),
                           params=PEER_PARAMS)
        initiator.connect(node.options.identity.public, [NODE_ADDR], monotonic(), time.time())
        exchange(node, initiator)
        peer = node.peers[initiator.public_key]
        channel = peer.channel
        assert channel is not None
        session = node.device.get_session(initiator.public_key)
        assert session is not None and session.cipher == CHACHA20_POLY1305
        assert peer.peer_params == PEER_PARAMS and peer.mtu.limit == 1400
        assert channel._conn_send_max == 96 * 1024  # the peer's connection window
        assert channel._table.peer_max_streams == 2
        assert channel._table.local_max_streams == node.options.transport.max_streams
        stream = channel._table.open_local()
        assert stream.send.max_data == 64 * 1024  # the peer's stream window
        assert stream.recv.window.max_data == node.options.transport.stream_window
        # `status --json` shows how the channel copes with the path
        counters = node.status()["peers"][0]["channel"]
        assert set(counters) == {"packets_sent", "packets_received", "packets_lost",
                                 "retransmitted_bytes", "smoothed_rtt_ms", "cwnd"}
        assert counters["packets_lost"] == counters["retransmitted_bytes"] == 0
        assert counters["cwnd"] == channel.stats().cwnd
        node._timer.cancel()

    asyncio.run(main())


def version_1_initiation(sender: Identity, node: Node, secret: bytes) -> bytes:
    """What ptunnel before transport parameters sends: the timestamp alone as the payload."""
    responder = node.options.identity.public
    psk = handshake_psk(secret)
    state = noise.initialize(handshake.PROLOGUE, responder)
    body = noise.write_message_1(state, sender.private, sender.public, os.urandom(32), responder,
                                 crypto.tai64n(time.time()))
    return CookieGenerator(responder, psk).add_macs(HEADER_INITIATION + os.urandom(4) + body, 0.0)


def test_an_older_peer_is_shown_refused_with_the_reason() -> None:
    async def main() -> None:
        secret = os.urandom(32)
        node = socketless_node(secret)
        old = Identity.generate()
        peer = node._peer(old.public, monotonic())  # as an introduction to it makes the link
        assert peer is not None and peer.refused is None
        # Punching: the old node's initiation arrives; it would drop ours (too long for it).
        node._receive_session(version_1_initiation(old, node, secret), PEER_ADDR, monotonic())
        node._flush()
        assert node.device.counters.old_version == 1 and not node.device.sessions
        assert peer.state(monotonic()) == f"refused: {OLD_VERSION_REASON}"
        assert node.status()["peers"][0]["state"] == f"refused: {OLD_VERSION_REASON}"
        node._timer.cancel()

    asyncio.run(main())
