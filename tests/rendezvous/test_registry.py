"""Registry (pure server logic) driven with raw datagrams in virtual time: no sockets.

Every test runs on both store backends (SQLite in memory, and Redis: a throw-away redis-server,
flushed per test), except those in SQLITE_ONLY: the fuzzers (one shared registry) and the one
that reopens a database file."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rendezvous import protocol as p
from rendezvous.ratelimit import SOURCE_SLOTS, SourceRateLimiter
from rendezvous.redisstore import RedisStore
from rendezvous.registry import REGISTRATION_TTL, SWEEP_INTERVAL, Registry, Send
from rendezvous.store import SQLiteStore, Store
from tunnel.keys.netkeys import network_id, network_signing_key
from tunnel.path.sealing import open_reply, seal_request
from tunnel.session.crypto import public_key

T0 = 1_800_000_000.0  # wall-clock seconds; the registry's time scale
NET_SECRET = bytes(range(32))
NET = network_id(NET_SECRET)
KEY = network_signing_key(NET_SECRET)
OTHER_SECRET = bytes(range(1, 33))
A_ADDR = ("203.0.113.10", 40001)
B_ADDR = ("198.51.100.20", 40002)


def rng_for(seed: int) -> random.Random:
    return random.Random(seed)


SQLITE_ONLY = frozenset({
    "test_restart_on_same_database_keeps_registrations_and_cookies",
    "test_garbage_costs_no_state_and_never_amplifies",
    "test_unproven_signed_requests_never_amplify",
})
NEW_STORE: list[Callable[[], Store]] = [SQLiteStore]  # the backend of the running test


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        kinds = ["sqlite"] if metafunc.function.__name__ in SQLITE_ONLY else ["sqlite", "redis"]
        metafunc.parametrize("backend", kinds, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    opened: list[Store] = []

    def new_store() -> Store:
        # 2 s: a loaded CI machine can stall longer than the production timeout (0.1 s)
        store: Store = (RedisStore(url, socket_timeout=2.0) if request.param == "redis"
                        else SQLiteStore())
        opened.append(store)
        return store

    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    NEW_STORE[:] = [new_store]
    try:
        yield str(request.param)
    finally:
        NEW_STORE[:] = [SQLiteStore]
        for store in opened:
            store.close()


def make_registry(store: Store | None = None, relay: bool = True,
                  relay_rate: float = 12_500_000) -> Registry:
    r = rng_for(1)
    return Registry(store or NEW_STORE[0](), rng=r.randbytes, relay_enabled=relay,
                    relay_rate=relay_rate)


def snapshot(reg: Registry) -> list[str]:
    """Everything the store holds, to show that a request changed nothing."""
    if isinstance(reg.store, RedisStore):
        client = reg.store._redis
        return sorted(f"{key!r}={client.dump(key)!r}" for key in client.scan_iter())
    assert isinstance(reg.store, SQLiteStore)
    return list(reg.store._db.iterdump())


NODES: dict[p.Endpoint, Node] = {}  # the latest node at each address: whose key opens replies


class Node:
    """A minimal hand-driven node: enough to build requests by hand, sealed as a node seals
    them (`tunnel.path.sealing`), and to open what the server sends it."""

    def __init__(self, private: bytes, addr: p.Endpoint, secret: bytes = NET_SECRET) -> None:
        self.private, self.static, self.addr = private, public_key(private), addr
        self.key, self.net = network_signing_key(secret), network_id(secret)
        self.counter = 0
        self.cookie = b""
        self.server_key = b""
        self.rng = rng_for(private[0])
        NODES[addr] = self

    def get_cookie(self, reg: Registry, now: float) -> None:
        out = reg.handle(p.encode_cookie_request(p.CookieRequest(b"c" * 8)), self.addr, now)
        reply = p.decode_reply(out[0].data)
        assert isinstance(reply, p.CookieReply) and reply.observed == self.addr
        self.cookie, self.server_key = reply.cookie, reply.server_key

    def request(self, kind: int, names: tuple[str, ...] = (), lan: tuple[p.Endpoint, ...] = (),
                nonce: bytes | None = None, echo: bytes = b"e" * 8, counter: int | None = None,
                static: bytes | None = None) -> bytes:
        """`static`: the key the request claims to act for (only the sealing proves one)."""
        self.counter = self.counter + 1 if counter is None else counter
        n = nonce or self.rng.randbytes(8)
        req = p.Request(kind, self.net, static or self.static, self.counter, n, self.cookie,
                        names, lan)
        server_key = self.server_key or b"\x09" + bytes(31)  # before any cookie: any key
        return seal_request(req, echo, self.key, self.private, server_key,
                            self.rng.randbytes(32))

    def open(self, data: bytes) -> p.Reply | None:
        return open_reply(data, self.private, self.static, self.server_key)


def replies_to(out: list[Send], addr: p.Endpoint) -> list[p.Reply]:
    got = [NODES[addr].open(s.data) if addr in NODES else p.decode_reply(s.data)
           for s in out if s.addr == addr]
    assert all(g is not None for g in got)
    return [g for g in got if g is not None]


def register(reg: Registry, node: Node, names: tuple[str, ...], now: float) -> list[Send]:
    if not node.cookie:
        node.get_cookie(reg, now)
    return reg.handle(node.request(p.REGISTER, names, (("10.1.0.2", 5000),)), node.addr, now)


def test_cookie_reply_is_stateless_and_not_larger_than_request() -> None:
    reg = make_registry()
    before = snapshot(reg)
    req = p.encode_cookie_request(p.CookieRequest(b"n" * 8))
    out = reg.handle(req, A_ADDR, T0)
    assert len(out) == 1 and len(out[0].data) <= len(req) and out[0].addr == A_ADDR
    assert snapshot(reg) == before
    # A short (unpadded) cookie request would amplify: it is dropped.
    assert reg.handle(req[:20], A_ADDR, T0) == []


def test_registration_records_the_observed_endpoint() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    out = register(reg, a, ("ssh-home",), T0)
    (msg,) = replies_to(out, A_ADDR)
    assert isinstance(msg, p.RegisterReply) and msg.observed == A_ADDR and msg.peers == ()
    m = reg.store.member(NET, a.static, T0)
    assert m is not None and m.endpoint == A_ADDR and m.names == ("ssh-home",)
    assert m.lan == (("10.1.0.2", 5000),)


def test_signed_request_without_valid_cookie_gets_only_a_cookie() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    a.cookie = b"\x00" * 20
    before = snapshot(reg)
    data = a.request(p.REGISTER, ("ssh-home",), echo=b"N" * 8)
    out = reg.handle(data, A_ADDR, T0)
    (msg,) = replies_to(out, A_ADDR)
    assert isinstance(msg, p.CookieReply) and msg.nonce == b"N" * 8
    assert len(out[0].data) < len(data)
    assert snapshot(reg) == before


def test_cookie_expires_after_two_windows() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    a.get_cookie(reg, T0)
    out = reg.handle(a.request(p.LIST), A_ADDR, T0 + 121)
    assert isinstance(replies_to(out, A_ADDR)[0], p.CookieReply)


def test_replay_from_another_address_is_rejected() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    a.get_cookie(reg, T0)
    data = a.request(p.REGISTER, ("ssh-home",))
    # The eavesdropper replays first, from its own address: it gets a cookie, nothing else.
    before = snapshot(reg)
    out = reg.handle(data, ("192.0.2.66", 6666), T0)
    assert [type(m) for m in replies_to(out, ("192.0.2.66", 6666))] == [p.CookieReply]
    assert snapshot(reg) == before
    assert reg.store.member(NET, a.static, T0) is None


def test_replay_from_the_same_address_cannot_move_or_resurrect() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    a.get_cookie(reg, T0)
    old = a.request(p.REGISTER, ("ssh-home",))
    reg.handle(old, A_ADDR, T0)
    reg.handle(a.request(p.LEAVE), A_ADDR, T0 + 1)
    assert reg.store.member(NET, a.static, T0 + 1) is None
    before = snapshot(reg)
    out = reg.handle(old, A_ADDR, T0 + 2)  # spoofed source, same address
    (msg,) = replies_to(out, A_ADDR)
    assert isinstance(msg, p.Refused) and msg.code == p.STALE_COUNTER and msg.counter == 2
    assert snapshot(reg) == before
    assert reg.store.member(NET, a.static, T0 + 2) is None


def test_outsider_signature_is_dropped_silently() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    register(reg, a, ("ssh-home",), T0)
    eve = Node(b"\xee" * 32, ("192.0.2.66", 6666), secret=OTHER_SECRET)
    eve.get_cookie(reg, T0)
    eve.net = NET  # claims our network but cannot sign for it
    before = snapshot(reg)
    for kind, names in ((p.REGISTER, ("ssh-home",)), (p.LIST, ()), (p.CONNECT, ("ssh-home",))):
        assert reg.handle(eve.request(kind, names), eve.addr, T0 + 1) == []
    assert snapshot(reg) == before
    assert reg.stats["bad_signature"] == 3


def test_name_conflict_names_the_holder() -> None:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("ssh-home",), T0)
    out = register(reg, b, ("web", "ssh-home"), T0 + 1)
    (msg,) = replies_to(out, B_ADDR)
    assert isinstance(msg, p.Refused) and msg.code == p.NAME_TAKEN
    assert msg.name == "ssh-home" and msg.holder == a.static
    assert reg.store.member(NET, b.static, T0 + 1) is None
    # Once the holder's registration has expired the name is free again.
    reg.handle_timer(T0 + REGISTRATION_TTL + 1)
    out = register(reg, b, ("ssh-home",), T0 + REGISTRATION_TTL + 2)
    assert isinstance(replies_to(out, B_ADDR)[0], p.RegisterReply)


def test_joins_and_expiry_are_announced() -> None:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    a.get_cookie(reg, T0)
    reg.handle(a.request(p.REGISTER, ("ssh-home",), nonce=b"A" * 8), A_ADDR, T0)
    out = register(reg, b, ("laptop",), T0 + 1)
    (joined,) = replies_to(out, A_ADDR)
    assert isinstance(joined, p.Joined) and joined.nonce == b"A" * 8
    assert joined.peer.static == b.static and joined.peer.names == ("laptop",)
    (registered,) = replies_to(out, B_ADDR)
    assert isinstance(registered, p.RegisterReply)
    assert [peer.static for peer in registered.peers] == [a.static]
    # A refreshes, B goes silent: B expires ~90 s after its last registration.
    for t in (20, 40, 60, 80):
        reg.handle(a.request(p.REGISTER, ("ssh-home",), nonce=b"A" * 8), A_ADDR, T0 + t)
        assert reg.handle_timer(T0 + t) == []
    assert reg.handle_timer(T0 + REGISTRATION_TTL) == []  # 89 s of silence: still there
    out = reg.handle_timer(T0 + 1 + REGISTRATION_TTL + SWEEP_INTERVAL)
    (left,) = replies_to(out, A_ADDR)
    assert isinstance(left, p.Left) and left.static == b.static and left.nonce == b"A" * 8
    assert reg.store.member(NET, b.static, T0 + 100) is None
    assert reg.store.member(NET, a.static, T0 + 100) is not None


def test_refresh_from_same_endpoint_is_not_reannounced() -> None:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("ssh-home",), T0)
    register(reg, b, ("laptop",), T0)
    out = reg.handle(b.request(p.REGISTER, ("laptop",)), B_ADDR, T0 + 20)
    assert replies_to(out, A_ADDR) == []


def test_networks_are_isolated() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    register(reg, a, ("ssh-home",), T0)
    x = Node(b"\xcc" * 32, ("192.0.2.30", 3000), secret=OTHER_SECRET)
    out = register(reg, x, ("ssh-home",), T0 + 1)  # same name, other network: fine
    (msg,) = replies_to(out, x.addr)
    assert isinstance(msg, p.RegisterReply) and msg.peers == ()
    assert replies_to(out, A_ADDR) == []  # A hears nothing of it
    (listed,) = replies_to(reg.handle(x.request(p.LIST), x.addr, T0 + 2), x.addr)
    assert isinstance(listed, p.Listed) and [m.static for m in listed.peers] == [x.static]
    register(reg, Node(b"\xab" * 32, ("203.0.113.11", 1)), ("only-in-a",), T0 + 3)
    out = reg.handle(x.request(p.CONNECT, ("only-in-a",)), x.addr, T0 + 3)
    (refused,) = replies_to(out, x.addr)
    assert isinstance(refused, p.Refused) and refused.code == p.UNKNOWN_PEER
    assert len(out) == 1


def test_connect_introduces_both_sides_at_once() -> None:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    a.get_cookie(reg, T0)
    reg.handle(a.request(p.REGISTER, ("ssh-home",), (("10.1.0.2", 5000),), nonce=b"A" * 8),
               A_ADDR, T0)
    register(reg, b, ("laptop",), T0)
    out = reg.handle(b.request(p.CONNECT, ("ssh-home",), nonce=b"C" * 8), B_ADDR, T0 + 1)
    (to_b,) = replies_to(out, B_ADDR)
    (to_a,) = replies_to(out, A_ADDR)
    assert isinstance(to_b, p.Introduced) and isinstance(to_a, p.Introduced)
    assert to_b == p.Introduced(b"C" * 8, a.static, A_ADDR, (("10.1.0.2", 5000),), ("ssh-home",),
                                to_b.relay_token)
    assert to_a == p.Introduced(b"A" * 8, b.static, B_ADDR, (("10.1.0.2", 5000),), ("laptop",),
                                to_a.relay_token)
    # Each side gets its own relay token (one per direction), random and 16 bytes.
    assert len(to_b.relay_token) == 16 and to_b.relay_token != to_a.relay_token
    (unknown,) = replies_to(reg.handle(b.request(p.CONNECT, ("nobody",)), B_ADDR, T0 + 2), B_ADDR)
    assert isinstance(unknown, p.Refused) and unknown.code == p.UNKNOWN_PEER


def test_a_replayed_connect_is_refused_and_introduces_nobody() -> None:
    """The counter of a CONNECT is checked in the same store call that reads both records: a
    replay (same address, valid cookie) is refused before anything reaches the target."""
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("ssh-home",), T0)
    register(reg, b, ("laptop",), T0)
    connect = b.request(p.CONNECT, ("ssh-home",))
    assert replies_to(reg.handle(connect, B_ADDR, T0 + 1), A_ADDR)
    before = snapshot(reg)
    out = reg.handle(connect, B_ADDR, T0 + 2)
    (msg,) = replies_to(out, B_ADDR)
    assert isinstance(msg, p.Refused) and msg.code == p.STALE_COUNTER
    assert replies_to(out, A_ADDR) == [] and len(out) == 1
    assert snapshot(reg) == before


def test_connect_from_unregistered_node_is_refused() -> None:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("ssh-home",), T0)
    b.get_cookie(reg, T0)
    (msg,) = replies_to(reg.handle(b.request(p.CONNECT, ("ssh-home",)), B_ADDR, T0), B_ADDR)
    assert isinstance(msg, p.Refused) and msg.code == p.NOT_REGISTERED


def introduce(reg: Registry, src: Node, dest_name: str, now: float) -> tuple[bytes, bytes]:
    """`src` asks to reach `dest_name`: the relay tokens (src->dest, dest->src) it grants."""
    out = reg.handle(src.request(p.CONNECT, (dest_name,)), src.addr, now)
    mine = [m for m in replies_to(out, src.addr) if isinstance(m, p.Introduced)]
    (dest_addr,) = {s.addr for s in out if s.addr != src.addr}
    theirs = replies_to(out, dest_addr)
    assert len(mine) == 1 and len(theirs) == 1 and isinstance(theirs[0], p.Introduced)
    return mine[0].relay_token, theirs[0].relay_token


def test_relay_only_between_introduced_members() -> None:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    c = Node(b"\xcc" * 32, ("192.0.2.30", 3000))
    for node, name in ((a, "a"), (b, "b"), (c, "c")):
        register(reg, node, (name,), T0)
    # Before any introduction there is no token, and made-up ones are unknown.
    assert reg.handle(p.encode_relay_to(b"\x00" * 16, b"opaque"), A_ADDR, T0 + 1) == []
    assert reg.relay.stats["relay_unknown_grant"] == 1
    ab, ba = introduce(reg, a, "b", T0 + 1)
    env = p.encode_relay_to(ab, b"opaque")
    (fwd,) = reg.handle(env, A_ADDR, T0 + 2)
    assert fwd.addr == B_ADDR and p.decode_relay_from(fwd.data) == (a.static, b"opaque")
    assert len(fwd.data) == len(env)
    (back,) = reg.handle(p.encode_relay_to(ba, b"r"), B_ADDR, T0 + 2)
    assert back.addr == A_ADDR and p.decode_relay_from(back.data) == (b.static, b"r")
    # The token, not the source address, is the proof: A behind a moved NAT mapping still relays.
    assert len(reg.handle(env, ("203.0.113.10", 50000), T0 + 2)) == 1
    # The permission ends with B's registration (within the 1 s route cache, not a sweep).
    reg.handle(b.request(p.LEAVE), B_ADDR, T0 + 3)
    assert reg.handle(env, A_ADDR, T0 + 3 + 1.01) == []


def test_no_relay_flag_disables_forwarding() -> None:
    reg = make_registry(relay=False)
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("a",), T0)
    register(reg, b, ("b",), T0)
    ab, _ = introduce(reg, a, "b", T0 + 1)
    assert reg.handle(p.encode_relay_to(ab, b"x"), A_ADDR, T0 + 2) == []
    assert reg.relay.stats["relay_disabled"] == 1


def test_relay_is_rate_limited_per_node() -> None:
    reg = make_registry(relay_rate=2_000_000)
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("a",), T0)
    register(reg, b, ("b",), T0)
    ab, _ = introduce(reg, a, "b", T0 + 1)
    env = p.encode_relay_to(ab, bytes(1200))
    sent = sum(len(reg.handle(env, A_ADDR, T0 + 2)) for _ in range(1000))
    assert 150 <= sent <= 300  # burst of 256 kB in 1233-byte envelopes ≈ 207
    assert reg.relay.stats["relay_node_limited"] == 1000 - sent
    # One second later the bucket has refilled by the rate: 2 MB ≈ 1,622 envelopes (capped at
    # the 256 kB burst again).
    again = sum(len(reg.handle(env, A_ADDR, T0 + 3)) for _ in range(1000))
    assert again == sent


def test_source_rate_limit() -> None:
    reg = make_registry()
    req = p.encode_cookie_request(p.CookieRequest(b"n" * 8))
    answered = sum(len(reg.handle(req, A_ADDR, T0)) for _ in range(200))
    assert answered == 40
    assert len(reg.handle(req, B_ADDR, T0)) == 1  # another source is unaffected
    answered = sum(len(reg.handle(req, A_ADDR, T0 + 1)) for _ in range(200))
    assert answered == 20


def test_spoofed_source_flood_costs_no_memory() -> None:
    reg = make_registry()
    table = reg._by_source
    before = (len(table._tokens), len(table._stamps), len(reg.relay._by_node))
    req = p.encode_cookie_request(p.CookieRequest(b"n" * 8))
    answered = sum(len(reg.handle(req, (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 9), T0))
                   for i in range(20_000))
    assert answered >= 19_000  # distinct sources mostly have distinct slots
    assert (len(table._tokens), len(table._stamps), len(reg.relay._by_node)) == before
    assert before[0] == SOURCE_SLOTS
    assert len(reg.handle(req, A_ADDR, T0)) == 1


def test_restart_on_same_database_keeps_registrations_and_cookies(tmp_path: Path) -> None:
    db = tmp_path / "rendezvous.db"
    reg = make_registry(SQLiteStore(db))
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("ssh-home",), T0)
    register(reg, b, ("laptop",), T0)
    assert isinstance(reg.store, SQLiteStore)
    reg.store.close()
    reg2 = Registry(SQLiteStore(db), rng=rng_for(99).randbytes,  # new process, new rng,
                    static_private=reg.static_private)  # same key file
    # Names come back from the database.
    held = reg2.store.member_by_name(NET, "ssh-home", T0 + 5)
    assert held is not None and held.static == a.static
    # A's refresh with its old cookie and next counter just works, and is not re-announced.
    out = reg2.handle(a.request(p.REGISTER, ("ssh-home",)), A_ADDR, T0 + 20)
    (msg,) = replies_to(out, A_ADDR)
    assert isinstance(msg, p.RegisterReply) and [m.static for m in msg.peers] == [b.static]
    assert replies_to(out, B_ADDR) == []
    # Replays are still refused after the restart (counters are in the store).
    c = Node(b"\xcc" * 32, ("192.0.2.30", 3000))
    out = register(reg2, c, ("ssh-home",), T0 + 21)
    (refused,) = replies_to(out, c.addr)
    assert isinstance(refused, p.Refused) and refused.holder == a.static


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([A_ADDR, B_ADDR, ("2001:db8::5", 1)]))
def test_garbage_costs_no_state_and_never_amplifies(data: bytes, addr: p.Endpoint) -> None:
    reg = FUZZ_REG
    before = snapshot(reg)
    for out in (reg.handle(data, addr, T0 + 1), reg.handle_netcheck(data, addr, T0 + 1)):
        for send in out:
            assert len(send.data) <= len(data)
    assert snapshot(reg) == before


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([p.REGISTER, p.LIST, p.CONNECT, p.LEAVE]), st.binary(min_size=20,
       max_size=20), st.integers(0, 2**64 - 1), st.binary(max_size=40))
def test_unproven_signed_requests_never_amplify(kind: int, cookie: bytes, counter: int,
                                                tail: bytes) -> None:
    reg = FUZZ_REG
    before = snapshot(reg)
    req = p.Request(kind, NET, b"\x77" * 32, min(counter, p.COUNTER_LIMIT - 1), b"n" * 8, cookie,
                    ("x",) if kind in (p.REGISTER, p.CONNECT) else ())
    data = seal_request(req, b"e" * 8, KEY, b"\x77" * 32, reg.static_public, b"\x55" * 32)
    for candidate in (data, data[:-1] + tail):
        for send in reg.handle(candidate, ("192.0.2.50", 5050), T0 + 1):
            assert len(send.data) <= len(candidate)
    assert snapshot(reg) == before


def _fuzz_registry() -> Registry:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("a",), T0)
    register(reg, b, ("b",), T0)
    reg.handle(a.request(p.CONNECT, ("b",)), A_ADDR, T0)
    reg._by_source = SourceRateLimiter(1e12, 1e12, b"k")  # fuzzing must not hit the limiter
    return reg


FUZZ_REG = _fuzz_registry()
