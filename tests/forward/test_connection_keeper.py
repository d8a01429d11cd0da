"""A connection's keeper (`Connection._keep_up`) sleeps while its peer is ready and nothing waits,
and wakes at once for what it must act on: its link going down, and a local connection that has
to wait for the peer's stream limit (no news says when that grows, so it looks every
CHECK_INTERVAL while one waits). Driven through stand-ins for the node, its link and a local
connection; the NAT lab's idle test counts the wake-ups of real processes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import cast

import pytest
import uvloop

from tunnel.api import (
    CHECK_INTERVAL,
    QUIET_CHECK_INTERVAL,
    RECONNECT_MIN,
    Connection,
    Tunnel,
)
from tunnel.forward.bridge import StreamBridge
from tunnel.node.peer import Peer

PROMPTLY = 3 * CHECK_INTERVAL  # well over a look's spacing while busy, far under an idle one's


@dataclass
class FakeChannel:
    credit: int = 0  # streams the peer lets us open now
    opened: int = 0

    def can_open_stream(self) -> bool:
        return self.opened < self.credit

    def open_stream(self) -> int:
        self.opened += 1
        return 2 * self.opened


@dataclass
class FakeLink:
    channel: FakeChannel = field(default_factory=FakeChannel)
    ready: bool = True
    reconnecting_since: float | None = None
    on_change: list[object] = field(default_factory=list)


@dataclass
class FakeNode:
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    rdv_events: list[object] = field(default_factory=list)
    asked: int = 0  # introductions asked of the rendezvous

    def request_connect(self, name: str) -> None:
        self.asked += 1


@dataclass
class FakeTunnel:
    node: FakeNode = field(default_factory=FakeNode)
    connections: list[Connection] = field(default_factory=list)


@dataclass(eq=False)  # hashable, as the connection keeps its waiting bridges in a dict
class FakeBridge:
    closed: bool = False
    transport: None = None
    streams: list[int] = field(default_factory=list)

    def attach(self, link: Peer, stream_id: int, first: bytes = b"") -> None:
        self.streams.append(stream_id)


async def kept_connection() -> tuple[Connection, FakeLink, asyncio.Task[None]]:
    """A connection whose peer is ready, its keeper running and asleep."""
    assert PROMPTLY < QUIET_CHECK_INTERVAL / 10  # so the tests tell news from a timed look
    tunnel = FakeTunnel()
    connection = Connection(cast(Tunnel, tunnel), "web", None, False, False)
    link = FakeLink()
    connection.link = cast(Peer, link)
    keeper = asyncio.get_running_loop().create_task(connection._keep_up())
    await asyncio.sleep(0.05)
    return connection, link, keeper


def test_a_connection_waiting_for_the_peers_stream_limit_gets_its_stream() -> None:
    async def scenario() -> None:
        connection, link, keeper = await kept_connection()
        bridge = FakeBridge()
        connection._attach(cast(StreamBridge, bridge))  # the peer's limit is reached
        assert connection.waiting and not bridge.streams
        await asyncio.sleep(CHECK_INTERVAL / 2)
        link.channel.credit = 1  # a stream closed, or the peer raised its limit
        await asyncio.sleep(PROMPTLY)
        assert bridge.streams == [2] and not connection.waiting
        keeper.cancel()

    uvloop.run(scenario())


def test_a_link_going_down_wakes_the_keeper_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        connection, link, keeper = await kept_connection()
        node = cast(FakeTunnel, connection.tunnel).node
        link.ready = False
        connection._on_link_change(cast(Peer, link))
        await asyncio.sleep(PROMPTLY)
        assert "peer not reachable; asking the rendezvous again in 1 s" in caplog.text
        await asyncio.sleep(RECONNECT_MIN)
        assert node.asked == 1
        keeper.cancel()

    with caplog.at_level(logging.INFO, logger="tunnel.api"):
        uvloop.run(scenario())


def test_a_local_connection_waits_while_the_peer_is_lost_and_goes_when_it_is_back() -> None:
    # The peer crashed: its old channel is still open until its idle timeout, but a stream
    # opened on it would be reset once the peer's successor is found.
    async def scenario() -> None:
        connection, link, keeper = await kept_connection()
        link.channel.credit = 5
        link.reconnecting_since = 1.0
        connection._on_link_change(cast(Peer, link))
        bridge = FakeBridge()
        connection._attach(cast(StreamBridge, bridge))
        assert connection.waiting and not bridge.streams and link.channel.opened == 0
        link.channel = FakeChannel(credit=5)  # the successor's channel, found
        link.reconnecting_since = None
        connection._on_link_change(cast(Peer, link))
        assert bridge.streams == [2] and not connection.waiting and link.channel.opened == 1
        keeper.cancel()

    uvloop.run(scenario())
