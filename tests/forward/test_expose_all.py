"""`ptunnel up` exposes every entry of its config at once, and each service is served before the
node has started: a restarted daemon's peers come back at its old address and open streams
before any rendezvous answer. One at a time, a service waited for the registrations of the
entries before it (in the soak, a clean restart reset a connection made in that window), and a
rendezvous that is down held the later entries back for as long as it was down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import uvloop

from tunnel.api import Tunnel
from tunnel.cli.commands.up import expose_all
from tunnel.keys.identity import Identity

ENTRIES: list[dict[str, Any]] = [
    {"port": ("127.0.0.1", 2201), "as": "ssh"},
    {"port": ("127.0.0.1", 8080), "as": "web"},
    {"port": ("127.0.0.1", 27015), "as": "game", "udp": True},
]


def started(tunnel: Tunnel) -> bool:
    return tunnel.node.rdv is not None


def asked(rendezvous: socket.socket) -> bool:
    try:
        return bool(rendezvous.recv(2048, socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def test_every_entry_is_served_at_once_while_the_rendezvous_is_silent(tmp_path: Path) -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a rendezvous that is down
        silent.bind(("127.0.0.1", 0))
        home = tmp_path / "node"
        home.mkdir(mode=0o700)
        tunnel = Tunnel(home=home, identity=Identity.generate(), network_secret=os.urandom(32),
                        rendezvous=silent.getsockname(), bind=("127.0.0.1", 0))
        exposing = asyncio.ensure_future(expose_all(tunnel, ENTRIES))
        for _turn in range(100):  # the loop's first turns run each expose's first steps
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
        # The node runs and asks; no answer yet, and every service is there.
        assert not exposing.done()
        assert tunnel.forwarder.services["game"].udp
        assert sorted(tunnel.forwarder.services) == ["game", "ssh", "web"]
        exposing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await exposing
        assert tunnel.forwarder.services == {}  # a cancelled expose leaves no service behind
        assert tunnel.node.options.names == ()
        await tunnel.close()
        silent.close()

    uvloop.run(asyncio.wait_for(main(), 30))
