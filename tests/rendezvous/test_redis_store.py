"""What only the Redis backend has: URLs, several servers racing for one name, and Redis outages
(killed and restarted, connections lost), with a real redis-server started for the test.

The store contract itself runs on Redis in `test_store.py` and `test_registry.py`."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvloop

from rendezvous import protocol as p
from rendezvous.ratelimit import SourceRateLimiter
from rendezvous.redisstore import (
    EXPIRE_BATCH,
    RETRY_AFTER,
    SOCKET_TIMEOUT,
    RedisStore,
    parse_store_url,
)
from rendezvous.registry import Registry, Send
from rendezvous.store import Member, StoreUnavailable
from tests.forward.test_forward_loopback import exchange
from tests.rendezvous.test_registry import NET, Node, register, replies_to
from tests.rendezvous.test_server_cli import ROOT, free_port_pair, invoke
from tests.support.loopback import free_port, start_tcp_echo, world
from tests.support.redisserver import RedisServer
from tunnel.api import TunnelError
from tunnel.cli.commands import rendezvous as rendezvous_cmd
from tunnel.errors import UserError
from tunnel.node.netcheck import query
from tunnel.path import rendezvous as rc
from tunnel.path.rendezvous import REFRESH_INTERVAL, RendezvousClient

T0 = 1_800_000_000.0
SERVER_KEY = b"\x5e" * 32  # one key for the servers of one deployment
SECRET = bytes(range(32))  # the network of test_registry's NET
SERVER_ADDR = ("192.0.2.1", 7000)


# Redis answers in well under a millisecond here, but a loaded 2-CPU CI machine can stall a
# process for longer than the production SOCKET_TIMEOUT (0.1 s); a dead Redis refuses connections
# at once, so the longer timeout slows no test down.
TEST_TIMEOUT = 2.0  # seconds


class FakeClock:
    """The store's monotonic clock (its back-off after a failure), stepped by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test kills and restarts it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def registry(url: str, seed: int, clock: FakeClock | None = None) -> Registry:
    store = RedisStore(url, socket_timeout=TEST_TIMEOUT, clock=clock or FakeClock())
    return Registry(store, rng=random.Random(seed).randbytes, static_private=SERVER_KEY)


# --- URLs ------------------------------------------------------------------------------------
def test_store_urls_are_checked_and_shown_without_password() -> None:
    url = parse_store_url("redis://:s3cret@10.0.0.5:6380/2")
    assert (url.host, url.port, url.db) == ("10.0.0.5", 6380, 2)
    assert url.describe() == "redis://10.0.0.5:6380/2"
    assert parse_store_url("redis://localhost").describe() == "redis://localhost:6379/0"
    assert parse_store_url("redis://[::1]:7/1").describe() == "redis://[::1]:7/1"
    for bad, words in (("http://x:1/0", "not a redis:// URL"), ("redis://:1/0", "no host"),
                       ("redis://x:99999/0", "bad port"), ("redis://x:1/db", "a number"),
                       ("x", "not a redis:// URL")):
        with pytest.raises(ValueError, match=words):
            parse_store_url(bad)


# --- the name race ---------------------------------------------------------------------------
def test_two_servers_racing_for_one_name_give_it_to_exactly_one_key(redis_url: str) -> None:
    """Two keys ask two servers (two registries, each with its own Redis connection) for one
    name at the same moment, 1,000 times: exactly one wins each time, the other is told who."""
    one, two = registry(redis_url, 1), registry(redis_url, 2)
    for reg in (one, two):
        reg._by_source = SourceRateLimiter(1e12, 1e12, b"k")  # 2,000 requests in 10 s
    a = Node(b"\xaa" * 32, ("203.0.113.10", 40001))
    b = Node(b"\xbb" * 32, ("198.51.100.20", 40002))
    a.get_cookie(one, T0)
    b.get_cookie(two, T0)  # the cookie secret is shared through the store: either server
    barrier = threading.Barrier(2)
    outs: dict[str, list[Send]] = {}

    def ask(who: str, reg: Registry, data: bytes, addr: p.Endpoint, now: float) -> None:
        barrier.wait()
        outs[who] = reg.handle(data, addr, now)

    wins = {a.static: 0, b.static: 0}
    for i in range(1000):
        name, now = f"race-{i}", T0 + i * 0.01
        threads = [threading.Thread(target=ask, args=(who, reg, node.request(p.REGISTER, (name,)),
                                                      node.addr, now))
                   for who, reg, node in (("a", one, a), ("b", two, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = {node.static: [m for m in replies_to(outs[who], node.addr)
                             if isinstance(m, p.RegisterReply | p.Refused)]
               for who, node in (("a", a), ("b", b))}
        winners = [k for k, msgs in got.items() if [type(m) for m in msgs] == [p.RegisterReply]]
        losers = [k for k, msgs in got.items()
                  if len(msgs) == 1 and isinstance(msgs[0], p.Refused)
                  and msgs[0].code == p.NAME_TAKEN and msgs[0].name == name]
        assert len(winners) == 1 and len(losers) == 1, (i, got)
        (loser,) = losers
        refusal = got[loser][0]
        assert isinstance(refusal, p.Refused) and refusal.holder == winners[0]
        held = one.store.member_by_name(NET, name, now)
        assert held is not None and held.static == winners[0]
        wins[winners[0]] += 1
    assert all(count > 0 for count in wins.values()), wins  # both won sometimes: a real race


# --- outages ---------------------------------------------------------------------------------
def test_requests_while_redis_is_down_get_try_later_and_change_nothing(
        own_redis: RedisServer) -> None:
    clock = FakeClock()
    reg = registry(own_redis.url, 1, clock)
    a, b = Node(b"\xaa" * 32, ("203.0.113.10", 40001)), Node(b"\xbb" * 32, ("198.51.100.2", 2))
    register(reg, a, ("ssh-home",), T0)
    b.get_cookie(reg, T0)  # cookies need no store: served from the secret read at start
    own_redis.kill()
    for kind, names in ((p.REGISTER, ("ssh-home",)), (p.LIST, ()), (p.CONNECT, ("ssh-home",))):
        out = reg.handle(b.request(kind, names), b.addr, T0 + 1)
        (msg,) = replies_to(out, b.addr)  # an answer, not silence, and nothing else
        assert isinstance(msg, p.Refused) and msg.code == p.TRY_LATER
        assert len(out) == 1
    assert reg.stats["store_unavailable"] == 3
    assert reg.handle_timer(T0 + 200) == []  # a sweep cannot run either: nothing expires
    # Redis comes back (from its append-only file); the store reconnects by itself.
    own_redis.start()
    clock.now += RETRY_AFTER
    held = reg.store.member_by_name(NET, "ssh-home", T0 + 2)
    assert held is not None and held.static == a.static  # no name changed owner
    out = reg.handle(b.request(p.REGISTER, ("ssh-home",)), b.addr, T0 + 2)
    (refused,) = replies_to(out, b.addr)
    assert isinstance(refused, p.Refused) and refused.code == p.NAME_TAKEN
    assert refused.holder == a.static
    (ok,) = replies_to(reg.handle(a.request(p.REGISTER, ("ssh-home",)), a.addr, T0 + 3), a.addr)
    assert isinstance(ok, p.RegisterReply)


def test_a_lost_connection_is_reopened_without_a_refusal(redis_url: str) -> None:
    reg = registry(redis_url, 1)
    a = Node(b"\xaa" * 32, ("203.0.113.10", 40001))
    register(reg, a, ("ssh-home",), T0)
    admin = redis.Redis.from_url(redis_url)
    try:
        assert int(admin.client_kill_filter(_type="normal", skipme=True)) >= 1
    finally:
        admin.close()
    (msg,) = replies_to(reg.handle(a.request(p.LIST), a.addr, T0 + 1), a.addr)
    assert isinstance(msg, p.Listed)
    assert reg.stats["store_unavailable"] == 0


def test_a_store_that_was_down_answers_at_once_until_it_may_be_tried_again(
        own_redis: RedisServer) -> None:
    """While Redis is down the store fails fast (no connect per request blocking the loop)."""
    clock = FakeClock()
    store = RedisStore(own_redis.url, socket_timeout=TEST_TIMEOUT, clock=clock)
    own_redis.kill()
    with pytest.raises(StoreUnavailable):
        store.member(NET, b"k" * 32, T0)
    trips = store.round_trips
    own_redis.start()
    with pytest.raises(StoreUnavailable):  # within RETRY_AFTER: not even tried
        store.member(NET, b"k" * 32, T0)
    clock.now += RETRY_AFTER
    assert store.member(NET, b"k" * 32, T0) is None
    assert store.round_trips == trips + 1
    store.close()


# --- a node through a Redis restart ----------------------------------------------------------
class Link:
    """A `RendezvousClient` and a `Registry` wired back to back in virtual time: the client's
    monotonic `t`, the registry's wall clock T0 + t."""

    def __init__(self, reg: Registry, private: bytes, names: tuple[str, ...],
                 addr: p.Endpoint) -> None:
        self.reg, self.addr = reg, addr
        self.client = RendezvousClient(SECRET, private, names, [], SERVER_ADDR,
                                       server_key=reg.static_public,
                                       rng=random.Random(private[0]).randbytes)
        self.events: list[rc.Event] = []

    def step(self, t: float) -> None:
        """Fire due timers and carry datagrams both ways until nothing moves."""
        self.client.handle_timer(t)
        while out := self.client.datagrams_to_send():
            for data, _ in out:
                for send in self.reg.handle(data, self.addr, T0 + t):
                    if send.addr == self.addr:
                        self.client.receive_datagram(send.data, SERVER_ADDR, t)
        while (event := self.client.next_event()) is not None:
            self.events.append(event)

    def run(self, start: float, end: float) -> None:
        t = start
        while t <= end:
            self.step(t)
            t = round(t + 0.25, 2)

    def take(self) -> list[rc.Event]:
        events, self.events = self.events, []
        return events


def test_a_node_keeps_its_name_through_a_redis_restart(own_redis: RedisServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    reg = registry(own_redis.url, 1, clock)
    home = Link(reg, b"\xaa" * 32, ("ssh-home",), ("203.0.113.10", 40001))
    laptop = Link(reg, b"\xbb" * 32, (), ("198.51.100.20", 40002))
    for node in (home, laptop):
        node.client.start(0.0)
        node.run(0.0, 1.0)
        assert any(isinstance(e, rc.Registered) for e in node.take())
    own_redis.kill()
    # The next refresh meets the outage: refused for now, and the registration goes on.
    home.run(1.25, REFRESH_INTERVAL + 1)
    assert reg.stats["store_unavailable"] >= 1 and home.take() == []
    assert home.client._registering
    assert "cannot reach its database" in caplog.text
    laptop.client.request_connect("ssh-home", REFRESH_INTERVAL + 1)
    laptop.run(REFRESH_INTERVAL + 1, REFRESH_INTERVAL + 2)
    refusals = [e for e in laptop.take() if isinstance(e, rc.ConnectRefused)]
    assert [e.reason for e in refusals] == [rc.TRY_LATER_REASON]
    # Redis is back within the client's back-off: the refresh goes through and the name
    # still belongs to the same key; a connect works again, within one refresh interval.
    own_redis.start()
    clock.now += RETRY_AFTER
    start = REFRESH_INTERVAL + 2
    home.run(start, start + REFRESH_INTERVAL)
    assert home.client.registered
    # Same endpoint: no new `Registered`, and never a refusal (the laptop's JOINED push, which
    # this wiring does not carry to the home node, shows up as a PeerJoined of the refresh).
    assert not any(isinstance(e, rc.Registered | rc.RegistrationRefused) for e in home.take())
    held = reg.store.member_by_name(NET, "ssh-home", T0 + start + REFRESH_INTERVAL)
    assert held is not None and held.static == home.client.static
    laptop.client.request_connect("ssh-home", start + REFRESH_INTERVAL)
    laptop.run(start + REFRESH_INTERVAL, start + REFRESH_INTERVAL + 1)
    assert any(isinstance(e, rc.Introduced) and e.peer_name == "ssh-home" for e in laptop.take())


# --- the server process and its command line -------------------------------------------------
@pytest.fixture
def redis_server_process(own_redis: RedisServer, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`python -m rendezvous.server --store redis://...` on a free loopback port pair."""
    port = free_port_pair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rendezvous.server", "--listen", f"127.0.0.1:{port}", "--db",
         str(tmp_path / "state" / "rdv.db"), "--store", own_redis.url], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "rendezvous listening" in line and f"store {own_redis.url}" in line, line
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_the_server_refuses_for_now_while_redis_is_down_and_serves_again_after(
        own_redis: RedisServer, redis_server_process: tuple[str, int]) -> None:
    home = RendezvousClient(SECRET, b"\xaa" * 32, ["ssh-home"], [], redis_server_process)
    home.start(time.monotonic())
    assert isinstance(query(home, _answered, 5.0)[-1], rc.Registered)
    own_redis.kill()
    other = RendezvousClient(SECRET, b"\xcc" * 32, ["web"], [], redis_server_process)
    other.start(time.monotonic())
    refused = query(other, _answered, 5.0)[-1]  # an answer at once, not silence
    assert isinstance(refused, rc.RegistrationRefused)
    assert refused.reason == rc.TRY_LATER_REASON
    own_redis.start()
    # The same client keeps asking (its registration never ended) and gets in: the server
    # reconnected to the restarted Redis by itself.
    assert isinstance(query(other, _registered, 10.0)[-1], rc.Registered)
    thief = RendezvousClient(SECRET, b"\xdd" * 32, ["ssh-home"], [], redis_server_process)
    thief.start(time.monotonic())
    taken = query(thief, _answered, 5.0)[-1]
    assert isinstance(taken, rc.RegistrationRefused) and "held by another node" in taken.reason


def _answered(event: rc.Event) -> bool:
    return isinstance(event, rc.Registered | rc.RegistrationRefused)


def _registered(event: rc.Event) -> bool:
    return isinstance(event, rc.Registered)


def test_store_mistakes_are_one_line_user_errors(tmp_path: Path) -> None:
    for url, words in (("redis://x:99999/0", "bad port"), ("mysql://x/0", "not a redis://")):
        module, ctx, args = invoke(["rendezvous", "--home", str(tmp_path), "--store", url])
        with pytest.raises(UserError, match=words):
            module.run(args, ctx)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    module, ctx, args = invoke(["rendezvous", "--home", str(tmp_path), "--listen", "127.0.0.1:9",
                                "--store", dead])
    with pytest.raises(UserError, match=r"cannot reach the store .*; start Redis"):
        module.run(args, ctx)


def test_the_store_comes_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "rendezvous.yaml").write_text("store: redis://10.0.0.5:6380/3\n")
    _, ctx, _ = invoke(["rendezvous", "--home", str(tmp_path)])
    assert rendezvous_cmd.settings(ctx).store == "redis://10.0.0.5:6380/3"
    _, ctx, _ = invoke(["rendezvous", "--home", str(tmp_path), "--store", "redis://h/1"])
    assert rendezvous_cmd.settings(ctx).store == "redis://h/1"  # the flag wins


def test_an_unreachable_redis_is_tried_less_and_less_often() -> None:
    """A Redis host that drops packets costs a socket timeout per try: the pauses between tries
    double up to RETRY_AFTER_MAX, so the loop is blocked a small, bounded share of the time."""
    clock = FakeClock()
    # A listener on loopback that never accepts: connections complete in the kernel's backlog
    # and then nothing answers, as a host that drops packets would (tests use no other address).
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    store = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", clock=clock)
    pauses = []
    for _ in range(6):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.member(NET, b"k" * 32, T0)
        # the call and its one retry, with room for a loaded machine: far from blocking for ever
        assert time.monotonic() - start < 10 * SOCKET_TIMEOUT
        pauses.append(store._down_until - clock.now)
        with pytest.raises(StoreUnavailable):  # within the pause: no network at all
            store.member(NET, b"k" * 32, T0)
        clock.now = store._down_until
    assert pauses == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    store.close()
    silent.close()


# --- end to end ------------------------------------------------------------------------------
def test_tunnels_through_a_redis_backed_rendezvous_survive_a_redis_restart(
        own_redis: RedisServer, tmp_path: Path) -> None:
    """expose and connect on 127.0.0.1 through a server on Redis; Redis killed: the tunnel's
    data keeps flowing, a new expose is told why it cannot register; Redis back: it can."""

    async def main() -> None:
        async with world(tmp_path, store_url=own_redis.url) as w:
            echo, service_port = await start_tcp_echo()
            await w.tunnel().expose(service_port, "echo")
            local = free_port()
            await w.tunnel().connect("echo", local)
            payload = os.urandom(256 * 1024)
            assert await exchange(local, payload) == payload
            own_redis.kill()
            with pytest.raises(TunnelError, match="cannot reach its database right now"):
                await w.tunnel().expose(service_port, "later")
            assert await exchange(local, payload) == payload  # the path needs no rendezvous
            own_redis.start()
            late = w.tunnel()
            for _ in range(20):  # the server tries Redis again within its back-off
                try:
                    await late.expose(service_port, "later")
                    break
                except TunnelError:
                    await asyncio.sleep(0.5)
            else:
                pytest.fail("no registration after Redis came back")
            local2 = free_port()
            await w.tunnel().connect("later", local2)
            assert await exchange(local2, payload) == payload
            echo.close()

    uvloop.run(asyncio.wait_for(main(), 60))


def test_many_registrations_running_out_at_once_expire_in_batches(redis_url: str) -> None:
    store = RedisStore(redis_url, socket_timeout=TEST_TIMEOUT)
    count = 2 * EXPIRE_BATCH + 10
    for i in range(count):
        static = i.to_bytes(32, "big")
        store.register(Member(NET, static, (f"n{i}",), ("203.0.113.1", 1000 + i), (), b"n" * 8,
                              T0, T0 + 90), T0)
        store.bump_counter(NET, static, 7, T0 + 50)
    gone = store.expire(T0 + 100)
    assert sorted(m.static for m in gone) == [i.to_bytes(32, "big") for i in range(count)]
    assert store.members(NET, T0) == [] and store.expire(T0 + 100) == []
    assert store.bump_counter(NET, (0).to_bytes(32, "big"), 1, T0 + 400) is None  # dropped
    store.close()


def test_after_redis_lost_everything_nodes_register_again_on_their_next_refresh(
        redis_url: str) -> None:
    """A Redis that restarts empty (no append-only file): each node's next refresh registers
    it again under its names, and connects work again within one refresh interval."""
    reg = registry(redis_url, 1)
    home = Link(reg, b"\xaa" * 32, ("ssh-home",), ("203.0.113.10", 40001))
    laptop = Link(reg, b"\xbb" * 32, (), ("198.51.100.20", 40002))
    for node in (home, laptop):
        node.client.start(0.0)
        node.run(0.0, 1.0)
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.flushall()
    finally:
        admin.close()
    assert reg.store.member_by_name(NET, "ssh-home", T0 + 2) is None
    for node in (home, laptop):
        node.run(1.25, REFRESH_INTERVAL + 1.5)
        node.take()
    held = reg.store.member_by_name(NET, "ssh-home", T0 + REFRESH_INTERVAL + 2)
    assert held is not None and held.static == home.client.static
    laptop.client.request_connect("ssh-home", REFRESH_INTERVAL + 2)
    laptop.run(REFRESH_INTERVAL + 2, REFRESH_INTERVAL + 3)
    assert any(isinstance(e, rc.Introduced) and e.peer_name == "ssh-home" for e in laptop.take())


def test_a_relayed_session_keeps_its_route_while_redis_is_down(own_redis: RedisServer) -> None:
    reg = registry(own_redis.url, 1)
    a, b = Node(b"\xaa" * 32, ("203.0.113.10", 40001)), Node(b"\xbb" * 32, ("198.51.100.2", 2))
    register(reg, a, ("a",), T0)
    register(reg, b, ("b",), T0)
    out = reg.handle(a.request(p.CONNECT, ("b",)), a.addr, T0 + 1)
    (intro,) = [m for m in replies_to(out, a.addr) if isinstance(m, p.Introduced)]
    envelope = p.encode_relay_to(intro.relay_token, b"opaque")
    assert [s.addr for s in reg.handle(envelope, a.addr, T0 + 2)] == [b.addr]
    own_redis.kill()
    # Past the route cache's life the store is asked again and cannot answer: the route this
    # server saw valid still carries the session; an id it never saw valid gets nothing.
    assert [s.addr for s in reg.handle(envelope, a.addr, T0 + 10)] == [b.addr]
    assert reg.handle(p.encode_relay_to(b"\x01" * 16, b"x"), a.addr, T0 + 10) == []
    assert reg.relay.stats["relay_store_unavailable"] == 2
