"""The connecting side opens no more UDP flows to a service than the exposing side announced in
its handshake's transport parameters (`max_udp_flows`)."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import cast

from tests.support.socketless_node import socketless_node
from tunnel.forward.udp_flows import MAX_UDP_FLOWS, FlowOwner, UdpListener
from tunnel.node.peer import Peer
from tunnel.path.manager import PathManager
from tunnel.session.params import TransportParams


def listener_to(params: TransportParams | None) -> UdpListener:
    # A real node (a compiled listener checks its type), on a wire instead of a socket.
    owner = cast(FlowOwner, SimpleNamespace(node=socketless_node(os.urandom(32))))
    listener = UdpListener(owner, "dns")
    listener.link = Peer(static=bytes(32), path=PathManager(started=0.0), is_client=True,
                         session_params=lambda: params)
    return listener


def sources(listener: UdpListener, count: int) -> None:
    for port in range(count):
        listener.datagram_received(b"query", ("127.0.0.1", 40000 + port))


def test_flows_past_the_peers_announced_limit_are_dropped() -> None:
    listener = listener_to(TransportParams(max_udp_flows=2))
    sources(listener, 5)
    assert len(listener.flows) == 2
    assert listener.dropped == 5  # 2 with no channel yet, 3 past the limit


def test_before_a_handshake_the_default_limit_holds() -> None:
    listener = listener_to(None)
    sources(listener, 5)
    assert len(listener.flows) == 5 <= MAX_UDP_FLOWS
