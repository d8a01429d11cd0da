"""One network across several servers on one Redis: pushes for another server's members are
routed to that server (the registry marks them, the push bus carries them), relayed packets too,
and on loopback a node registered at server 1 connects by name to one at server 2."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from rendezvous import protocol as p
from rendezvous.pushbus import decode_push, encode_push
from rendezvous.redisstore import RedisStore
from rendezvous.registry import Registry, Send
from rendezvous.server import serve
from tests.forward.test_forward_loopback import exchange
from tests.rendezvous.test_registry import Node, register, replies_to
from tests.rendezvous.test_server_cli import ROOT, free_port_pair, invoke
from tests.support.loopback import free_port, free_udp_pair, start_tcp_echo
from tests.support.redisserver import RedisServer
from tunnel.api import Tunnel, TunnelError
from tunnel.cli.commands import rendezvous as rendezvous_cmd
from tunnel.errors import UserError
from tunnel.keys.identity import Identity
from tunnel.path import rendezvous as rc

T0 = 1_800_000_000.0
SERVER_KEY = b"\x5e" * 32  # the deployment's one key, shared by its servers


def server(url: str, server_id: str, seed: int) -> Registry:
    return Registry(RedisStore(url), rng=random.Random(seed).randbytes,
                    static_private=SERVER_KEY, server_id=server_id)


def test_pushes_for_another_servers_member_are_routed_to_that_server(redis_url: str) -> None:
    one, two = server(redis_url, "s1", 1), server(redis_url, "s2", 2)
    a = Node(b"\xaa" * 32, ("203.0.113.10", 40001))
    b = Node(b"\xbb" * 32, ("198.51.100.20", 40002))
    register(one, a, ("alpha",), T0)
    # B joins at server 2: A's JOINED leaves through server 1, where A registered.
    out = register(two, b, ("beta",), T0 + 1)
    joined = [s for s in out if s.addr == a.addr]
    assert joined and all(s.via == "s1" for s in joined)
    assert all(s.via == "" for s in out if s.addr == b.addr)  # B's own replies: from here
    # A asks server 1 to connect to B: A's INTRODUCED from server 1, B's through server 2.
    out = one.handle(a.request(p.CONNECT, ("beta",)), a.addr, T0 + 2)
    (to_a,) = [s for s in out if s.addr == a.addr]
    (to_b,) = [s for s in out if s.addr == b.addr]
    assert (to_a.via, to_b.via) == ("", "s2")
    intro_b = b.open(to_b.data)
    assert isinstance(intro_b, p.Introduced) and intro_b.static == a.static
    intro_a = a.open(to_a.data)
    assert isinstance(intro_a, p.Introduced)
    # Relayed packets from A (sent to server 1) to B leave through server 2, checked and
    # charged at server 1; B answers through server 2 and its packets go through server 1.
    (relayed,) = one.handle(p.encode_relay_to(intro_a.relay_token, b"opaque-1"), a.addr, T0 + 3)
    assert (relayed.addr, relayed.via) == (b.addr, "s2")
    assert p.decode_relay_from(relayed.data) == (a.static, b"opaque-1")
    (back,) = two.handle(p.encode_relay_to(intro_b.relay_token, b"opaque-2"), b.addr, T0 + 3)
    assert (back.addr, back.via) == (a.addr, "s1")
    assert one.relay.stats["relay_forwarded"] == 1
    # A forged token is dropped before any hand-over.
    assert one.handle(p.encode_relay_to(b"\x01" * 16, b"x"), a.addr, T0 + 4) == []
    # B leaves at server 2: A's LEFT goes through server 1.
    out = two.handle(b.request(p.LEAVE), b.addr, T0 + 5)
    assert [(s.addr, s.via) for s in out] == [(a.addr, "s1")]
    assert isinstance(a.open(out[0].data), p.Left)


def test_a_member_that_moves_server_is_pushed_to_through_its_new_one(redis_url: str) -> None:
    one, two = server(redis_url, "s1", 1), server(redis_url, "s2", 2)
    a = Node(b"\xaa" * 32, ("203.0.113.10", 40001))
    b = Node(b"\xbb" * 32, ("198.51.100.20", 40002))
    register(one, a, ("alpha",), T0)
    register(one, b, ("beta",), T0)
    register(two, a, ("alpha",), T0 + 1)  # A failed over to server 2
    out = one.handle(b.request(p.CONNECT, ("alpha",)), b.addr, T0 + 2)
    assert [s.via for s in out if s.addr == a.addr] == ["s2"]


def test_push_messages_round_trip_and_garbage_is_dropped() -> None:
    for addr in (("10.0.1.2", 43540), ("2001:db8::1", 7000)):
        assert decode_push(encode_push(addr, b"sealed")) == (addr, b"sealed")
    for bad in (b"", b"\x05ab", b"\x0210\x00\x00x", b"\x02\xff\xfe\x1f\x90x",
                encode_push(("10.0.0.1", 1), b"")):
        assert decode_push(bad) is None


# --- on loopback, two server processes' worth of shells on one Redis --------------------------
@contextlib.asynccontextmanager
async def two_servers(tmp: Path, url: str) -> AsyncIterator[list[tuple[str, int]]]:
    tasks, addrs = [], []
    for i in (1, 2):
        port = free_udp_pair()
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(serve(
            ("127.0.0.1", port), tmp / f"server{i}" / "r.db", ready=ready.set, store_url=url,
            static_private=SERVER_KEY, server_id=f"s{i}")))
        await asyncio.wait_for(ready.wait(), 5)
        addrs.append(("127.0.0.1", port))
    await asyncio.sleep(0.2)  # both subscribed to their push channels
    try:
        yield addrs
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


Servers = tuple[str, int] | list[tuple[str, int] | str]  # what `Tunnel(rendezvous=)` takes


def node(tmp: Path, name: str, secret: bytes, server: Servers) -> Tunnel:
    home = tmp / name
    home.mkdir(mode=0o700)
    return Tunnel(home=home, identity=Identity.generate(), network_secret=secret,
                  rendezvous=server, bind=("127.0.0.1", 0))


@dataclass
class EchoPair:
    a: Tunnel  # exposes a TCP echo as "echo"
    b: Tunnel
    service_port: int  # the echo's
    seen_by_a: list[rc.Event]  # A's rendezvous events


@contextlib.asynccontextmanager
async def echo_pair(tmp: Path, secret: bytes, a_at: Servers,
                    b_at: Servers) -> AsyncIterator[EchoPair]:
    """Nodes A (given the servers `a_at`) exposing a TCP echo and B (given `b_at`), of one
    network; both closed on the way out."""
    a, b = node(tmp, "a", secret, a_at), node(tmp, "b", secret, b_at)
    seen_by_a: list[rc.Event] = []
    a.node.rdv_events.append(seen_by_a.append)
    try:
        echo, service_port = await start_tcp_echo()
        await a.expose(service_port, "echo")
        yield EchoPair(a, b, service_port, seen_by_a)
        echo.close()
    finally:
        await a.close()
        await b.close()


def test_connect_by_name_to_a_node_of_another_server(redis_server: RedisServer,
                                                     tmp_path: Path) -> None:
    redis_server.flush()

    async def main() -> None:
        async with two_servers(tmp_path, redis_server.url) as (s1, s2), \
                echo_pair(tmp_path, os.urandom(32), s1, s2) as pair:
            local = free_port()
            await pair.b.connect("echo", local)  # B asks server 2; A is told through server 1
            payload = os.urandom(512 * 1024)
            assert await exchange(local, payload) == payload
            # On loopback B's handshake would reach A anyway; that A was told, through its own
            # server, is what lets it punch through a NAT. The push crosses Redis pub/sub and
            # may come after the data did (a loaded CI machine): wait for it.
            for _ in range(100):
                intros = [e for e in pair.seen_by_a if isinstance(e, rc.Introduced)]
                if intros:
                    break
                await asyncio.sleep(0.05)
            assert intros and not intros[0].initiated_by_us
            assert intros[0].peer_static == pair.b.node.options.identity.public

    uvloop.run(asyncio.wait_for(main(), 60))


def _sends_to(out: list[Send], addr: p.Endpoint) -> list[Send]:
    return [s for s in out if s.addr == addr]


def test_a_lone_servers_pushes_stay_local(redis_url: str) -> None:
    """Without a server id (SQLite, or one server) nothing is handed over."""
    reg = Registry(RedisStore(redis_url), rng=random.Random(1).randbytes,
                   static_private=SERVER_KEY)
    a = Node(b"\xaa" * 32, ("203.0.113.10", 40001))
    b = Node(b"\xbb" * 32, ("198.51.100.20", 40002))
    register(reg, a, ("alpha",), T0)
    out = register(reg, b, ("beta",), T0)
    assert _sends_to(out, a.addr) and all(s.via == "" for s in out)
    (msg,) = [m for m in replies_to(out, b.addr) if isinstance(m, p.RegisterReply)]
    assert msg is not None



def test_the_server_id_comes_from_the_flag_or_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "rendezvous.yaml").write_text("store: redis://10.0.0.5:6380/3\nserver_id: eu-1\n")
    _, ctx, _ = invoke(["rendezvous", "--home", str(tmp_path)])
    assert rendezvous_cmd.settings(ctx).server_id == "eu-1"
    _, ctx, _ = invoke(["rendezvous", "--home", str(tmp_path), "--server-id", "us-2"])
    assert rendezvous_cmd.settings(ctx).server_id == "us-2"
    _, ctx, _ = invoke(["rendezvous", "--home", str(tmp_path), "--server-id", "a b"])
    with pytest.raises(UserError, match="without spaces"):
        rendezvous_cmd.settings(ctx)


# --- failover: a server process killed mid-transfer -------------------------------------------
@contextlib.contextmanager
def server_process(tmp: Path, url: str, server_id: str) -> Iterator[ServerProcess]:
    """`python -m rendezvous.server` on Redis with the deployment's key, on free ports."""
    state = tmp / server_id
    state.mkdir(mode=0o700)
    key = state / "rendezvous.key"
    key.write_bytes(base64.b64encode(SERVER_KEY) + b"\n")
    key.chmod(0o600)
    port = free_port_pair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rendezvous.server", "--listen", f"127.0.0.1:{port}", "--db",
         str(state / "rdv.db"), "--store", url, "--server-id", server_id], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "rendezvous listening" in line, line
        assert "receiving pushes" in proc.stdout.readline()
        yield ServerProcess(proc, ("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    addr: tuple[str, int]


async def stream_echo(port: int, chunks: int, every: float,
                      midway: Callable[[], Coroutine[Any, Any, None]]) -> tuple[bytes, bytes]:
    """Send `chunks` random 16 KiB chunks, one every `every` s, through the echo at `port`,
    calling `midway` (awaited beside the stream) after the first; what was sent and echoed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = bytearray()
    echoed = bytearray()

    async def read() -> None:
        while chunk := await reader.read(65536):
            echoed.extend(chunk)

    reading = asyncio.create_task(read())
    side: asyncio.Task[None] | None = None
    for i in range(chunks):
        chunk = os.urandom(16 * 1024)
        sent.extend(chunk)
        writer.write(chunk)
        await writer.drain()
        if i == 0:
            side = asyncio.create_task(midway())
        await asyncio.sleep(every)
    writer.write_eof()
    await asyncio.wait_for(reading, 20)
    writer.close()
    assert side is not None
    await side
    return bytes(sent), bytes(echoed)


def test_a_server_killed_mid_transfer_the_path_flows_and_the_node_moves_to_the_next(
        redis_server: RedisServer, tmp_path: Path) -> None:
    redis_server.flush()
    with server_process(tmp_path, redis_server.url, "s1") as one, \
            server_process(tmp_path, redis_server.url, "s2") as two:
        servers: Servers = [one.addr, two.addr]

        async def main() -> None:
            secret = os.urandom(32)
            async with echo_pair(tmp_path, secret, servers, servers) as pair:
                a = pair.a
                local = free_port()
                await pair.b.connect("echo", local)
                assert a.status()["rendezvous"]["server"] == f"127.0.0.1:{one.addr[1]}"

                async def kill_and_wait() -> None:
                    one.proc.kill()
                    # A's next refresh (≤ 20 s) meets the silence; 7 s later it is at server 2.
                    for _ in range(400):
                        rdv = a.status()["rendezvous"]
                        if rdv["server"] == f"127.0.0.1:{two.addr[1]}" and rdv["registered"]:
                            return
                        await asyncio.sleep(0.1)
                    pytest.fail(f"A did not move to server 2: {a.status()['rendezvous']}")

                sent, echoed = await stream_echo(local, 400, 0.1, kill_and_wait)
                assert echoed == sent  # the direct path flowed the whole time
                # A new node, given the list, finds server 1 dead, moves on and connects to A.
                c = node(tmp_path, "c", secret, servers)
                try:
                    local2 = free_port()
                    await c.connect("echo", local2, timeout=60)
                    payload = os.urandom(64 * 1024)
                    assert await exchange(local2, payload) == payload
                    assert c.status()["rendezvous"]["server"] == f"127.0.0.1:{two.addr[1]}"
                finally:
                    await c.close()

        uvloop.run(asyncio.wait_for(main(), 120))


# --- Redis restarted under two servers --------------------------------------------------------
def test_after_a_redis_restart_names_keep_their_owners_and_connects_across_servers_work(
        tmp_path: Path) -> None:
    """Redis killed and started again (from its append-only file) under two servers: within
    one refresh interval a connect across servers works again (the stores reconnected, the
    push channels were subscribed again), and no name changed owner."""
    own = RedisServer(tmp_path / "redis")
    own.start()

    async def main() -> None:
        secret = os.urandom(32)
        async with two_servers(tmp_path, own.url) as (s1, s2), \
                echo_pair(tmp_path, secret, s1, s2) as pair:
            await pair.b.start()
            own.kill()
            await asyncio.sleep(1.0)
            own.start()
            restarted = asyncio.get_running_loop().time()
            local = free_port()
            await pair.b.connect("echo", local, timeout=rc.REFRESH_INTERVAL)
            took = asyncio.get_running_loop().time() - restarted
            assert took < rc.REFRESH_INTERVAL
            payload = os.urandom(64 * 1024)
            assert await exchange(local, payload) == payload
            assert any(isinstance(e, rc.Introduced) and not e.initiated_by_us
                       for e in pair.seen_by_a)  # A was told through its server's channel
            thief = node(tmp_path, "thief", secret, s2)
            try:
                with pytest.raises(TunnelError, match="held by another node"):
                    await thief.expose(pair.service_port, "echo")
            finally:
                await thief.close()

    try:
        uvloop.run(asyncio.wait_for(main(), 90))
    finally:
        own.kill()
