"""End to end on 127.0.0.1 without root: rendezvous, expose and connect in one process.

The NAT-lab tests repeat the important ones through real NATs; these keep the forwarding
semantics (integrity, half-close, abort, refusal, UDP, errors) fast to check.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from tests.support.loopback import World, free_port, start_tcp_echo, start_udp_echo, tcp_echo, world
from tunnel.api import TunnelError
from tunnel.keys.netkeys import fingerprint


def run(tmp_path: Path, body: Callable[[World], Awaitable[None]], timeout: float = 60) -> None:
    async def main() -> None:
        async with world(tmp_path) as w:
            await asyncio.wait_for(body(w), timeout)

    uvloop.run(main())


async def exchange(port: int, payload: bytes) -> bytes:
    """Send everything, half-close, and read the reply until the far end's EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await reader.read(-1)  # to EOF: proves the reply survives our half-close
    await sender
    writer.close()
    return received


async def echo_pair(w: World) -> tuple[int, asyncio.AbstractServer]:
    server, service_port = await start_tcp_echo()
    exposer, connector = w.tunnel(), w.tunnel()
    await exposer.expose(service_port, "echo")
    local = free_port()
    await connector.connect("echo", local)
    return local, server


def test_tcp_integrity_and_half_close(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        local, _server = await echo_pair(w)
        payload = os.urandom(4 * 1024 * 1024)
        reply = await exchange(local, payload)
        assert hashlib.sha256(reply).digest() == hashlib.sha256(payload).digest()
        connection = w.tunnels[1].connections[0]
        assert connection.stats()["direct"] is True
        assert connection.stats()["bytes_sent"] >= len(payload)

    run(tmp_path, body)


def test_fifty_concurrent_connections(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        local, _server = await echo_pair(w)
        payloads = [os.urandom(256 * 1024) for _ in range(50)]
        replies = await asyncio.gather(*(exchange(local, p) for p in payloads))
        assert [hashlib.sha256(r).digest() for r in replies] == [
            hashlib.sha256(p).digest() for p in payloads
        ]

    run(tmp_path, body)


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a crashed or killed program does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def test_abort_on_either_end_resets_the_other(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue())

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put((reader, writer))

        service = await asyncio.start_server(hold, "127.0.0.1", 0)
        exposer, connector = w.tunnel(), w.tunnel()
        await exposer.expose(service.sockets[0].getsockname()[1], "svc")
        local = free_port()
        await connector.connect("svc", local)

        # The client aborts: the service's end must see the connection die promptly.
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"hello")
        service_reader, _service_writer = await asyncio.wait_for(accepted.get(), 5)
        assert await service_reader.readexactly(5) == b"hello"
        started = time.monotonic()
        abort(writer)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(service_reader.readexactly(1), 5)
        assert time.monotonic() - started < 2

        # The service aborts: the client's end must see it die promptly.
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"x")
        _service_reader, service_writer = await asyncio.wait_for(accepted.get(), 5)
        started = time.monotonic()
        abort(service_writer)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        assert time.monotonic() - started < 2

    run(tmp_path, body)


def test_service_not_listening_refuses_each_stream(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        exposer, connector = w.tunnel(), w.tunnel()
        dead_port = free_port()
        exposed = await exposer.expose(dead_port, "later")  # allowed: may start later
        local = free_port()
        await connector.connect("later", local)
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"anyone?")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        assert exposed.stats()["refused"] == 1
        # Once the service starts, the same tunnel carries connections to it.
        server = await asyncio.start_server(tcp_echo, "127.0.0.1", dead_port)
        assert await exchange(local, b"now") == b"now"
        server.close()

    run(tmp_path, body)


def test_udp_echo(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        _transport, service_port = await start_udp_echo()
        exposer, connector = w.tunnel(), w.tunnel()
        await exposer.expose(service_port, "game", udp=True)
        local = free_port(socket.SOCK_DGRAM)
        await connector.connect("game", local, udp=True)
        loop = asyncio.get_running_loop()
        received: list[bytes] = []

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                received.append(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", local))
        sent = [i.to_bytes(4, "big") + os.urandom(60) for i in range(2000)]
        for index, datagram in enumerate(sent):
            transport.sendto(datagram)
            if index % 10 == 9:
                await asyncio.sleep(0.005)  # a game's pace (~2,000/s), not a flood
        for _ in range(200):
            if len(received) >= len(sent):
                break
            await asyncio.sleep(0.01)
        assert len(set(received) & set(sent)) >= 0.99 * len(sent)
        transport.close()

    run(tmp_path, body)


def test_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        connector = w.tunnel()
        with pytest.raises(TunnelError, match="no node named 'ssh-home' in your network"):
            await connector.connect("ssh-home", free_port(), timeout=10)

    run(tmp_path, body)


def test_other_network_gets_nothing(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        connections = 0

        async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            writer.close()

        service = await asyncio.start_server(count, "127.0.0.1", 0)
        await w.tunnel("home").expose(service.sockets[0].getsockname()[1], "ssh-home")
        outsider = w.tunnel("evil")
        with pytest.raises(TunnelError, match="no node named 'ssh-home'"):
            await outsider.connect("ssh-home", free_port(), timeout=10)
        assert connections == 0

    run(tmp_path, body)


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_local_port_in_use(tmp_path: Path, udp: bool) -> None:
    # UDP: uvloop's create_datagram_endpoint(local_addr=) drops the bind's errno ("could not
    # bind"), which read "cannot listen on ...: None".
    async def body(w: World) -> None:
        with socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            if not udp:
                busy.listen()
            port = busy.getsockname()[1]
            with pytest.raises(TunnelError, match=f"local port 127.0.0.1:{port} is already in use"):
                await w.tunnel().connect("anything", port, udp=udp)

    run(tmp_path, body)


def test_name_held_by_another_key(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        first, second = w.tunnel(), w.tunnel()
        await first.expose(free_port(), "web")
        holder = fingerprint(first.options.identity.public)
        with pytest.raises(TunnelError, match=f"held by .*{re.escape(holder)}"):
            await second.expose(free_port(), "web")

    run(tmp_path, body)


def test_changed_key_is_refused_until_accepted(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        _server, service_port = await start_tcp_echo()
        original = w.tunnel()
        await original.expose(service_port, "box")
        laptop = w.tunnel()
        await laptop.connect("box", free_port())  # first use: the key is pinned
        await original.close()
        await asyncio.sleep(0.2)
        impostor = w.tunnel()
        for _ in range(50):  # the old registration is released by its LEAVE
            try:
                await impostor.expose(service_port, "box")
                break
            except TunnelError:
                await asyncio.sleep(0.2)
        old, new = (fingerprint(t.options.identity.public) for t in (original, impostor))
        with pytest.raises(TunnelError) as caught:
            await laptop.connect("box", free_port(), timeout=10)
        assert old in caught.value.message and new in caught.value.message
        accepted = await laptop.connect("box", free_port(), accept_new_key=True)
        assert accepted.link is not None and accepted.link.ready

    run(tmp_path, body)


def test_allow_list_refuses_other_members(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        _server, service_port = await start_tcp_echo()
        friend, stranger, exposer = w.tunnel(), w.tunnel(), w.tunnel()
        exposed = await exposer.expose(service_port, "private",
                                       allow=[friend.options.identity.public])
        friend_port, stranger_port = free_port(), free_port()
        await friend.connect("private", friend_port)
        await stranger.connect("private", stranger_port)
        assert await exchange(friend_port, b"hi") == b"hi"
        reader, writer = await asyncio.open_connection("127.0.0.1", stranger_port)
        writer.write(b"let me in")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        assert exposed.stats()["refused"] == 1

    run(tmp_path, body)


def test_rendezvous_given_by_host_name(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        _server, service_port = await start_tcp_echo()
        exposer, connector = w.tunnel(), w.tunnel()
        for tunnel in (exposer, connector):
            tunnel.options.rendezvous = ("localhost", w.rendezvous[1])
        await exposer.expose(service_port, "named")
        local = free_port()
        await connector.connect("named", local)
        assert await exchange(local, b"by name") == b"by name"
        unknown = w.tunnel()
        unknown.options.rendezvous = ("no-such-host.invalid", 7000)
        with pytest.raises(TunnelError, match="cannot resolve the rendezvous host"):
            await unknown.connect("named", free_port())

    run(tmp_path, body)


def test_closing_an_exposed_service_gives_the_name_back(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        first, second = w.tunnel(), w.tunnel()
        exposed = await first.expose(free_port(), "web")
        await exposed.close()
        await second.expose(free_port(), "web")  # would be refused while `first` held it
        assert [e.stats()["name"] for e in second.exposed] == ["web"]
        assert first.exposed == []

    run(tmp_path, body)
