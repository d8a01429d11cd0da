"""A real `Peer` with no node around it: what the forwarders' unit tests attach bridges and
flows to. (The node and forward packages are compiled: their attributes take real objects.)"""

from __future__ import annotations

from tunnel.channel.channel import Channel
from tunnel.node.peer import Peer
from tunnel.path.manager import PathManager


def bare_peer(static: bytes, channel: Channel | None = None) -> Peer:
    return Peer(static=static, path=PathManager(started=0.0), is_client=False, channel=channel)
