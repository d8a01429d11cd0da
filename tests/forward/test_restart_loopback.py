"""A clean restart of the exposing node, end to end on 127.0.0.1 (in one process, no root).

A node that stops closes its channels saying so (NODE_STOPPING). The connecting side must then
wait for it to come back on a new session, not open a new channel on the old session, whose
other end is gone: a connection made there in the gap would be reset once the restarted node
replaced that channel. The NAT lab's restart tests and the soak do the same through real NATs
with processes; this keeps the behaviour quick to check."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import uvloop

from tests.forward.test_forward_loopback import exchange
from tests.node.test_peer import awaiting
from tests.support.loopback import World, free_port, start_tcp_echo, world
from tunnel.api import Tunnel
from tunnel.keys.identity import Identity

NOTICE_WITHIN = 5.0  # s; the CLOSE crosses loopback in well under a millisecond
GAP = 1.0  # s; the exposing node is away this long, as while a service manager restarts it


def test_a_connection_made_while_the_exposing_node_restarts_waits_and_goes_through(
        tmp_path: Path) -> None:
    async def body(w: World) -> None:
        server, service_port = await start_tcp_echo()
        identity = Identity.generate()  # the restarted node is the same node: same key
        secret = w.networks.setdefault("home", os.urandom(32))

        def exposing_node(run: int) -> Tunnel:
            home = tmp_path / f"exposer-run{run}"
            home.mkdir(mode=0o700)
            return Tunnel(home=home, identity=identity, network_secret=secret,
                          rendezvous=w.rendezvous, bind=("127.0.0.1", 0))

        first = exposing_node(1)
        await first.expose(service_port, "echo")
        connector = w.tunnel()
        local = free_port()
        await connector.connect("echo", local)
        assert await exchange(local, b"before the restart") == b"before the restart"
        link = connector.connections[0].link
        assert link is not None and link.ready

        await first.close()  # what SIGTERM does
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NOTICE_WITHIN
        while not awaiting(link):
            assert loop.time() < deadline, "the connecting side never noticed the stop"
            await asyncio.sleep(0.01)
        during = asyncio.create_task(exchange(local, b"made during the restart"))
        await asyncio.sleep(GAP)
        # Still away: no channel was opened on the old session, and the connection waits.
        assert awaiting(link) and not during.done()

        second = exposing_node(2)
        w.tunnels.append(second)  # closed with the world
        await second.expose(service_port, "echo")
        assert await asyncio.wait_for(during, 20) == b"made during the restart"
        assert link.ready and not awaiting(link)
        assert await exchange(local, b"after the restart") == b"after the restart"
        server.close()

    async def main() -> None:
        async with world(tmp_path) as w:
            await asyncio.wait_for(body(w), 60)

    uvloop.run(main())
