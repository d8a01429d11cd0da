"""What `status` and `ping` say when a peer is not there, end to end on 127.0.0.1 (no root).

A peer "drops off the network" by closing its node's UDP socket: it stays registered at the
rendezvous (as a crashed or frozen host does until its registration expires), but nothing it was
sent is ever answered. The connecting side refuses the relay (`direct_only`) where a test needs
the path to go away rather than fall back to the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from tests.support.loopback import World, free_port, start_tcp_echo, world
from tunnel.api import Connection, PingResult, Tunnel
from tunnel.node.node import NO_ANSWER, NO_PATH, NO_SESSION


def run(tmp_path: Path, body: Callable[[World], Awaitable[None]], timeout: float = 60) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await asyncio.wait_for(body(w), timeout)

    uvloop.run(main())


def drop_off(tunnel: Tunnel) -> None:
    assert tunnel.node.udp is not None
    tunnel.node.udp.close()


async def until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def waiting(connection: Connection) -> dict[str, object]:
    stats = connection.stats()
    assert stats["ready"] is False and stats["reason"], stats
    return stats


def test_ping_says_no_answer_then_no_path(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        _server, service_port = await start_tcp_echo()
        exposer, connector = w.tunnel(), w.tunnel(direct_only=True)
        await exposer.expose(service_port, "echo")
        local = free_port()
        connection = await connector.connect("echo", local)
        answered = await connection.round_trip()
        assert answered.rtt is not None and answered.lost is None
        assert answered.path.startswith("direct lan 127.0.0.1:")  # the path, without its RTT
        assert ", rtt" not in answered.path
        assert connection.stats()["ready"] is True and connection.stats()["reason"] is None

        drop_off(exposer)
        replies: list[tuple[int, PingResult]] = []
        summary = await connector.ping("echo", count=2, interval=0.2,
                                       on_result=lambda seq, r: replies.append((seq, r)))
        assert summary["received"] == 0 and summary["sent"] == 2
        assert summary["lost"] == {NO_SESSION: 0, NO_PATH: 0, NO_ANSWER: 2}
        assert [r.lost for _seq, r in replies] == [NO_ANSWER, NO_ANSWER]
        assert [reply["lost"] for reply in summary["replies"]] == [NO_ANSWER, NO_ANSWER]
        assert summary["replies"][0]["path"].startswith("direct lan 127.0.0.1:")
        assert summary["rtt_ms"] is None and summary["state"] == "direct"

        # Data the peer never acknowledges makes the path silent; without the relay, no path
        # is left, while the session still stands.
        _reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"anyone there?")
        link = connection.link
        assert link is not None
        await until(lambda: link.path.path is None)
        assert await connection.round_trip() == PingResult(None, NO_PATH, "no path")
        stats = waiting(connection)
        assert str(stats["reason"]).startswith("lost 'echo': reconnecting since ")
        assert str(stats["state"]).startswith("reconnecting since ")
        assert isinstance(stats["waiting_s"], float) and stats["waiting_s"] < 10
        writer.close()

    run(tmp_path, body)


def test_connects_waiting_for_their_peer_say_why(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        exposer, connector = w.tunnel(), w.tunnel(direct_only=True)
        await exposer.expose(free_port(), "frozen")
        drop_off(exposer)

        # Introduced, but no handshake is ever answered: no session to ping over.
        frozen = await connector.connect("frozen", free_port(), wait=True)
        await until(lambda: frozen.link is not None)
        assert await frozen.round_trip() == PingResult(None, NO_SESSION, "no path")
        stats = waiting(frozen)
        assert str(stats["reason"]).startswith("found 'frozen' but no path opened "
                                               "(tried 127.0.0.1:")
        assert stats["state"] == "connecting"

        # Nobody of that name: the rendezvous's answer is the reason.
        ghost = await connector.connect("ghost", free_port(), wait=True)
        await until(lambda: ghost.refusal is not None)
        stats = waiting(ghost)
        assert str(stats["reason"]).startswith("no node named 'ghost' in your network")
        assert stats["state"] == "connecting" and stats["path"] is None

        status = connector.status()
        assert [c["name"] for c in status["connections"]] == ["frozen", "ghost"]
        assert all(c["ready"] is False for c in status["connections"])
        rendezvous = status["rendezvous"]
        assert rendezvous["server"] == f"127.0.0.1:{w.rendezvous[1]}"
        assert rendezvous["registered"] is True and rendezvous["names"] == []
        assert 0 <= rendezvous["last_answer_s"] < 5 and rendezvous["unanswered_s"] is None
        assert exposer.status()["rendezvous"]["names"] == ["frozen"]

    run(tmp_path, body)


def test_a_connect_shows_in_status_before_its_peer_is_found(tmp_path: Path) -> None:
    """`connect` (not only `wait=True`) is in `Tunnel.status()` while it waits."""

    async def body(w: World) -> None:
        exposer, connector = w.tunnel(), w.tunnel(direct_only=True)
        await exposer.expose(free_port(), "frozen")
        drop_off(exposer)
        attempt = asyncio.create_task(connector.connect("frozen", free_port(), timeout=30))
        await until(lambda: bool(connector.connections)
                    and connector.connections[0].link is not None)
        (stats,) = connector.status()["connections"]
        assert stats["ready"] is False and "no path opened" in stats["reason"]
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        assert connector.connections == []  # a connect that gave up is gone from status

    run(tmp_path, body)
