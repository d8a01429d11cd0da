"""An in-process world on 127.0.0.1: a rendezvous server, nodes of one or more networks, and
local services to expose (TCP echo, UDP echo). Used by the end-to-end tests without root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from rendezvous.server import serve
from tunnel.api import Tunnel
from tunnel.keys.identity import Identity


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_pair() -> int:
    """A port P with P and P+1 free for UDP (the rendezvous uses P+1 for netcheck)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free UDP port pair")


async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then half-close: the reply's end reaches the client after its own FIN."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class World:
    def __init__(self, tmp: Path, rendezvous_port: int) -> None:
        self.tmp = tmp
        self.rendezvous = ("127.0.0.1", rendezvous_port)
        self.networks: dict[str, bytes] = {}
        self.tunnels: list[Tunnel] = []
        self.count = 0

    def tunnel(self, network: str = "home", **options: object) -> Tunnel:
        secret = self.networks.setdefault(network, os.urandom(32))
        self.count += 1
        home = self.tmp / f"node{self.count}"
        home.mkdir(mode=0o700)
        tunnel = Tunnel(home=home, identity=Identity.generate(), network_secret=secret,
                        rendezvous=self.rendezvous, bind=("127.0.0.1", 0),
                        **options)  # type: ignore[arg-type]
        self.tunnels.append(tunnel)
        return tunnel


@contextlib.asynccontextmanager
async def world(tmp: Path, relay: bool = True,
                store_url: str | None = None) -> AsyncIterator[World]:
    """A rendezvous server (on `store_url`, by default SQLite in `tmp`) and the world of its
    nodes; the nodes are closed, then the server, on the way out."""
    port = free_udp_pair()
    ready = asyncio.Event()
    server = asyncio.create_task(serve(("127.0.0.1", port), tmp / "rendezvous.db", relay=relay,
                                       ready=ready.set, store_url=store_url))
    await asyncio.wait_for(ready.wait(), 5)
    the_world = World(tmp, port)
    try:
        yield the_world
    finally:
        for tunnel in the_world.tunnels:
            await tunnel.close()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def start_tcp_echo() -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(tcp_echo, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def start_udp_echo() -> tuple[asyncio.BaseTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    return transport, int(transport.get_extra_info("sockname")[1])
