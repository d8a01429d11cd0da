"""`Tunnel.expose_all` (what `ptunnel up` does with its `expose:` entries): every service is
served at once, before the node has started, and their names are registered in one request that
succeeds or fails as a whole.

A restarted daemon's peers come back at its old address and open streams before any rendezvous
answer. One entry at a time, a service waited for the registrations of the entries before it (in
the soak, a clean restart reset a connection made in that window), and a rendezvous that was down
held the later entries back for as long as it was down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from tests.support.loopback import World, world
from tunnel.api import Service, Tunnel, TunnelError
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import fingerprint

SERVICES = [Service(2201, "ssh"), Service(8080, "web"), Service(27015, "game", udp=True)]


def started(tunnel: Tunnel) -> bool:
    return tunnel.node.rdv is not None


def names(tunnel: Tunnel) -> tuple[str, ...]:
    return tunnel.node.options.names


def asked(rendezvous: socket.socket) -> bool:
    try:
        return bool(rendezvous.recv(2048, socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def test_every_service_is_served_at_once_while_the_rendezvous_is_silent(tmp_path: Path) -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a rendezvous that is down
        silent.bind(("127.0.0.1", 0))
        home = tmp_path / "node"
        home.mkdir(mode=0o700)
        tunnel = Tunnel(home=home, identity=Identity.generate(), network_secret=os.urandom(32),
                        rendezvous=silent.getsockname(), bind=("127.0.0.1", 0))
        exposing = asyncio.ensure_future(tunnel.expose_all(SERVICES, timeout=None))
        for _turn in range(100):
            if tunnel.forwarder.services:
                break
            await asyncio.sleep(0)
        # All at once, and before the node starts (and can receive a stream).
        assert sorted(tunnel.forwarder.services) == ["game", "ssh", "web"]
        assert not started(tunnel)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not started(tunnel) or not asked(silent):
            assert loop.time() < deadline, "the node never asked the rendezvous"
            await asyncio.sleep(0.01)
        # The node runs and asks, for every name; no answer yet, and every service is there.
        assert not exposing.done()
        assert names(tunnel) == ("ssh", "web", "game")
        assert tunnel.forwarder.services["game"].udp
        exposing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await exposing
        assert tunnel.forwarder.services == {}  # a cancelled expose leaves no service behind
        assert names(tunnel) == ()
        await tunnel.close()
        silent.close()

    uvloop.run(asyncio.wait_for(main(), 30))


def in_world(tmp_path: Path, body: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await asyncio.wait_for(body(w), 30)

    uvloop.run(main())


def test_all_are_registered_and_listed(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        tunnel = w.tunnel()
        exposed = await tunnel.expose_all(SERVICES)
        assert [e.name for e in exposed] == ["ssh", "web", "game"]
        assert tunnel.node.holds(["ssh", "web", "game"])
        assert [e["name"] for e in tunnel.status()["exposed"]] == ["ssh", "web", "game"]

    in_world(tmp_path, body)


def test_a_name_held_by_another_node_refuses_them_all_and_leaves_nothing(tmp_path: Path) -> None:
    """The whole request is refused, so no service of it may look exposed (a daemon must stop
    with the reason, not run on unregistered); the names the node held before stay held."""
    async def body(w: World) -> None:
        holder = w.tunnel()
        await holder.expose(2201, "web")
        tunnel = w.tunnel()
        await tunnel.expose(3000, "other")  # registered: the next request goes out at once
        with pytest.raises(TunnelError, match=r"^the rendezvous refused 'ssh', 'web', 'game': "
                                              r"name 'web' is held by another node") as refused:
            await tunnel.expose_all(SERVICES)
        assert str(refused.value).count(fingerprint(holder.options.identity.public)) == 1
        assert sorted(tunnel.forwarder.services) == ["other"]
        assert [e.name for e in tunnel.exposed] == ["other"]
        assert names(tunnel) == ("other",)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not tunnel.node.holds(["other"]):
            assert loop.time() < deadline, "the node's own name was not registered again"
            await asyncio.sleep(0.01)

    in_world(tmp_path, body)


@pytest.mark.parametrize(("services", "problem"), [
    ([Service(1, "web"), Service(2, "WEB")], "'web' is listed more than once"),
    ([Service(1, "ssh")], "'ssh' is already exposed by this node"),
])
def test_a_bad_list_is_refused_before_anything_changes(tmp_path: Path, services: list[Service],
                                                        problem: str) -> None:
    async def body(w: World) -> None:
        tunnel = w.tunnel()
        await tunnel.expose(22, "ssh")
        with pytest.raises(TunnelError, match=problem):
            await tunnel.expose_all(services)
        assert sorted(tunnel.forwarder.services) == ["ssh"]
        assert tunnel.node.options.names == ("ssh",)

    in_world(tmp_path, body)
