"""A local read is sent in its own reader callback (`Node.flush_now`), not one loop turn later;
when it was the node's only input, nothing else is drained; whatever its sealing queued at the
device (a rekey's initiation) goes out with it.

Socketless nodes (`tests.support.socketless_node`): what the node sends lands on the in-memory
wire at once, so "sent before the callback returned" is a plain look at the wire.
"""

from __future__ import annotations

import asyncio

from tests.support.socketless_node import (
    NODE_ADDR,
    OTHER_ADDR,
    bridge_on,
    linked,
    replies,
    socketless_node,
    tcp_read,
)
from tunnel.addresses import Addr
from tunnel.keys.netkeys import handshake_psk
from tunnel.node.node import Node
from tunnel.node.peer import Peer, PeerChanged
from tunnel.node.udp import monotonic
from tunnel.session.device import Device
from tunnel.session.session import SessionConfig
from tunnel.session.wire import is_initiation

SECRET = bytes(range(32))
SECOND_ADDR: Addr = ("10.0.0.3", 7003)
MESSAGE = b"ping-pong message " * 4  # 72 bytes, one small packet


def _opened(other: Device, datagrams: list[bytes]) -> list[bytes]:
    now = monotonic()
    return [payload for data in datagrams
            for session, payload in other.receive_batch(data, 0, NODE_ADDR, now, now)
            if session is not None]


def _mark(peers: list[Peer]) -> None:
    """Queue an event on each peer: a full drain of a peer (`Node._drain_peer`) takes it, the
    send of a lone read does not. (No monkeypatching: the node's classes are compiled.)"""
    for peer in peers:
        peer._events.append(PeerChanged())


def _drained(peers: list[Peer]) -> list[bytes]:
    return [peer.static for peer in peers if not peer._events]


def test_a_local_read_is_sent_before_its_callback_returns() -> None:
    async def scenario() -> None:
        node = socketless_node(SECRET)
        other, peer, _sent = linked(node, monotonic())
        bridge = bridge_on(node, peer)
        tcp_read(bridge, MESSAGE)
        sent = replies(node, OTHER_ADDR)  # no loop turn has run since the read
        assert sent, "the read waits for a later turn of the loop"
        assert any(MESSAGE in payload for payload in _opened(other, sent))

    asyncio.run(scenario())


def test_a_lone_read_drains_nothing_else_but_arms_the_timer() -> None:
    async def scenario() -> None:
        node = socketless_node(SECRET)
        _other, peer, _sent = linked(node, monotonic())
        _mark([peer])
        tcp_read(bridge_on(node, peer), MESSAGE)
        assert replies(node, OTHER_ADDR)
        assert _drained([peer]) == []  # nothing but the read happened: no full flush
        # The packet in flight has a loss timer, and the node's one timer is armed for it.
        armed, due = node._timer._deadline, peer.get_timer()
        assert armed is not None and due is not None and armed <= due

    asyncio.run(scenario())


def test_a_read_while_another_peer_waits_flushes_that_peer_too() -> None:
    async def scenario() -> None:
        node = socketless_node(SECRET)
        _other, peer, _sent = linked(node, monotonic())
        _second, waiting, _sent = linked(node, monotonic(), SECOND_ADDR)
        _mark([peer, waiting])
        bridge = bridge_on(node, peer)
        node.kick(waiting)  # a forwarder of the other peer acted in this turn
        tcp_read(bridge, MESSAGE)
        assert replies(node, OTHER_ADDR)
        # both drained in this callback
        assert sorted(_drained([peer, waiting])) == sorted([peer.static, waiting.static])

    asyncio.run(scenario())


def _rekeying_node(rekey_after_messages: int) -> Node:
    node = socketless_node(SECRET)
    node.device = Device(node.options.identity.private, handshake_psk(SECRET),
                         config=SessionConfig(rekey_after_messages=rekey_after_messages),
                         params=node.options.transport)
    return node


def test_a_rekey_started_by_the_seal_goes_out_with_thetcp_read() -> None:
    async def scenario() -> None:
        # The handshake ran 10 s ago (a rekey may start: the last initiation is older than
        # REKEY_TIMEOUT), and the keys are due for a rekey at the read's packet: as many
        # transport datagrams as linking sends, plus this one.
        _other, _peer, linking = linked(_rekeying_node(2**40), monotonic() - 10)
        node = _rekeying_node(len(linking) + 1)
        _other, peer, _sent = linked(node, monotonic() - 10)
        tcp_read(bridge_on(node, peer), MESSAGE)
        sent = replies(node, OTHER_ADDR)
        assert any(is_initiation(data) for data in sent), "the initiation waits"
        assert any(not is_initiation(data) for data in sent)

    asyncio.run(scenario())
