"""The `Store` contract, run against every backend (SQLite in memory and in a file, Redis), and
two servers sharing one store."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from rendezvous import protocol as p
from rendezvous.redisstore import RedisStore
from rendezvous.registry import Registry
from rendezvous.store import (
    Introduction,
    Member,
    RelayGrant,
    RequestCounter,
    SQLiteStore,
    Store,
)
from tunnel.keys.netkeys import network_id, network_signing_key
from tunnel.path.sealing import open_reply, seal_request
from tunnel.session.crypto import public_key

T = 1_800_000_000.0
NET, NET2 = b"N" * 32, b"M" * 32
KA, KB = b"a" * 32, b"b" * 32
SERVER_KEY = b"\x5e" * 32


def member(static: bytes, names: tuple[str, ...], expires: float = T + 90,
           endpoint: p.Endpoint = ("203.0.113.1", 1000), network: bytes = NET) -> Member:
    return Member(network, static, names, endpoint, (("10.0.0.2", 1000), ("fd00::2", 7)),
                  b"n" * 8, T, expires)


def open_store(kind: str, tmp_path: Path,
               request: pytest.FixtureRequest) -> SQLiteStore | RedisStore:
    if kind == "redis":
        return RedisStore(request.getfixturevalue("redis_url"), socket_timeout=2.0)
    return SQLiteStore(":memory:" if kind == "memory" else tmp_path / "r.db")


@pytest.fixture(params=["memory", "file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(request.param, tmp_path, request)
    yield s
    s.close()


def test_cookie_secret_first_candidate_wins(store: Store) -> None:
    assert store.cookie_secret(b"1" * 32) == b"1" * 32
    assert store.cookie_secret(b"2" * 32) == b"1" * 32


def test_counters_strictly_increase_over_the_whole_u64_range(store: Store) -> None:
    assert store.bump_counter(NET, KA, 0, T + 300) is None
    assert store.bump_counter(NET, KA, 0, T + 300) == 0
    assert store.bump_counter(NET, KA, 2**63, T + 300) is None
    assert store.bump_counter(NET, KA, 2**63 - 1, T + 300) == 2**63
    assert store.bump_counter(NET, KA, 2**64 - 1, T + 300) is None
    assert store.bump_counter(NET, KA, 2**64 - 1, T + 300) == 2**64 - 1
    assert store.bump_counter(NET2, KA, 1, T + 300) is None  # per network
    assert store.bump_counter(NET, KB, 1, T + 300) is None  # per node


def test_register_round_trips_and_reports_previous(store: Store) -> None:
    m = member(KA, ("ssh-home", "web"))
    assert store.register(m, T).previous is None
    assert store.member(NET, KA, T) == m
    again = member(KA, ("ssh-home",), endpoint=("203.0.113.1", 2000))
    assert store.register(again, T + 1).previous == m
    assert store.member_by_name(NET, "web", T + 1) is None  # a dropped name is released
    assert store.member_by_endpoint(("203.0.113.1", 2000), T + 1) == again
    assert store.member_by_endpoint(("203.0.113.1", 1000), T + 1) is None


def test_names_conflict_only_with_live_other_keys_of_the_same_network(store: Store) -> None:
    store.register(member(KA, ("ssh-home",)), T)
    result = store.register(member(KB, ("x", "ssh-home")), T)
    assert (result.conflict_name, result.conflict_holder) == ("ssh-home", KA)
    assert store.member(NET, KB, T) is None and store.member_by_name(NET, "x", T) is None
    assert not store.register(member(KB, ("ssh-home",), network=NET2), T).conflict_holder
    # After A's registration ran out, B may take the name (even before a sweep).
    assert not store.register(member(KB, ("ssh-home",), expires=T + 200), T + 91).conflict_holder
    held = store.member_by_name(NET, "ssh-home", T + 91)
    assert held is not None and held.static == KB


def test_register_returns_the_live_members_and_checks_cap_and_counter_first(
        store: Store) -> None:
    """One call does what a REGISTER needs (one Redis round trip): the counter, then the cap,
    then the names; whatever it refuses, nothing but a fresh counter is written."""
    a, b, c = member(KA, ("a",)), member(KB, ("b",)), member(b"c" * 32, ("c",))
    assert store.register(a, T, 2, RequestCounter(5, T + 300)).members == (a,)
    result = store.register(b, T, 2, RequestCounter(1, T + 300))
    assert result.members == (a, b) and result.previous is None
    full = store.register(c, T, 2, RequestCounter(1, T + 300))
    assert full.full and not full.members and store.member(NET, c.static, T) is None
    assert store.bump_counter(NET, c.static, 1, T + 300) == 1  # kept, as on its own
    assert store.register(member(KA, ("a2",)), T + 1, 2).previous == a  # a member is no newcomer
    stale = store.register(member(KA, ("a3",)), T + 2, 2, RequestCounter(5, T + 300))
    assert stale.stale_counter == 5 and not stale.members
    held = store.member(NET, KA, T + 2)
    assert held is not None and held.names == ("a2",)  # the stale one changed nothing
    assert store.register(member(KA, ("a3",)), T + 2, 2, RequestCounter(6, T + 300)).members[
        0].names == ("a3",)
    # Members that ran out are not listed, nor counted against the cap.
    late = member(c.static, ("c",), expires=T + 200)
    assert store.register(late, T + 91, 2).members == (late,)


def grant_rows(store: Store) -> int:
    """How many relay grants the backend still holds, live or not."""
    if isinstance(store, RedisStore):
        return len(list(store._redis.scan_iter(match=store._p + "g:*")))
    assert isinstance(store, SQLiteStore)
    return int(store._db.execute("SELECT count(*) FROM relay_grants").fetchone()[0])


def test_expire_removes_members_names_and_their_relay_grants(store: Store) -> None:
    store.register(member(KA, ("a",), expires=T + 10), T)
    store.register(member(KB, ("b",), expires=T + 100), T)
    assert store.grant_relay(NET, KA, KB, b"i" * 16, b"t" * 16, T + 1000, T) == b"t" * 16
    grant = store.relay_grant(b"i" * 16, T)
    assert grant == RelayGrant(NET, KA, KB, b"t" * 16, ("203.0.113.1", 1000))
    assert store.relay_grant(b"j" * 16, T) is None  # one direction only: b->a has no grant
    store.bump_counter(NET, KA, 5, T + 20)
    assert [m.static for m in store.members(NET, T)] == [KA, KB]
    assert store.relay_grant(b"i" * 16, T + 11) is None  # A's registration ran out: at once
    gone = store.expire(T + 30)
    assert [m.static for m in gone] == [KA]
    assert store.member_by_name(NET, "a", T + 30) is None
    assert grant_rows(store) == 0  # ... and the sweep deletes the grant
    assert store.bump_counter(NET, KA, 1, T + 400) is None  # its counter was dropped too
    assert store.expire(T + 30) == []


def test_remove_drops_member_names_and_relay_grants(store: Store) -> None:
    store.register(member(KA, ("a",)), T)
    store.register(member(KB, ("b",)), T)
    store.grant_relay(NET, KA, KB, b"i" * 16, b"t" * 16, T + 1000, T)
    store.grant_relay(NET, KB, KA, b"j" * 16, b"u" * 16, T + 1000, T)
    removed = store.remove(NET, KA)
    assert removed is not None and removed.static == KA
    assert store.remove(NET, KA) is None
    assert store.relay_grant(b"i" * 16, T) is None and store.relay_grant(b"j" * 16, T) is None
    assert grant_rows(store) == 0
    assert store.members(NET, T) == [store.member(NET, KB, T)]


def test_a_grant_keeps_its_token_while_it_lives_and_ends_with_the_introduction(
        store: Store) -> None:
    store.register(member(KA, ("a",), expires=T + 10_000), T)
    store.register(member(KB, ("b",), expires=T + 10_000), T)
    assert store.grant_relay(NET, KA, KB, b"i" * 16, b"t" * 16, T + 100, T) == b"t" * 16
    # Introduced again: same token (a lost INTRODUCED must not strand the old one), later end.
    assert store.grant_relay(NET, KA, KB, b"k" * 16, b"v" * 16, T + 500, T + 50) == b"t" * 16
    assert store.relay_grant(b"k" * 16, T + 50) is None
    assert store.relay_grant(b"i" * 16, T + 400) is not None
    assert store.relay_grant(b"i" * 16, T + 500) is None  # the introduction ran out
    # After that a new introduction gets a new token; the old id is gone for good.
    assert store.grant_relay(NET, KA, KB, b"k" * 16, b"v" * 16, T + 900, T + 600) == b"v" * 16
    assert store.relay_grant(b"i" * 16, T + 600) is None
    assert store.relay_grant(b"k" * 16, T + 600) == RelayGrant(NET, KA, KB, b"v" * 16,
                                                               ("203.0.113.1", 1000))


def test_a_grant_pair_is_two_grants_in_one_step(store: Store) -> None:
    store.register(member(KA, ("a",), expires=T + 10_000), T)
    store.register(member(KB, ("b",), expires=T + 10_000), T)
    assert store.grant_relay(NET, KA, KB, b"i" * 16, b"t" * 16, T + 100, T) == b"t" * 16
    # a->b has a live grant (its token stays), b->a gets the new one.
    assert store.grant_relay_pair(NET, KA, KB, (b"k" * 16, b"v" * 16), (b"j" * 16, b"w" * 16),
                                  T + 500, T + 50) == (b"t" * 16, b"w" * 16)
    assert store.relay_grant(b"i" * 16, T + 400) == RelayGrant(NET, KA, KB, b"t" * 16,
                                                               ("203.0.113.1", 1000))
    assert store.relay_grant(b"j" * 16, T + 400) == RelayGrant(NET, KB, KA, b"w" * 16,
                                                               ("203.0.113.1", 1000))
    assert store.relay_grant(b"k" * 16, T + 400) is None


def test_an_introduction_reads_both_records_after_the_counter_and_nothing_when_stale(
        store: Store) -> None:
    a, b = member(KA, ("a",)), member(KB, ("b", "bee"), expires=T + 50)
    store.register(a, T)
    store.register(b, T)
    found = store.introduction(NET, KA, "bee", RequestCounter(3, T + 300), T)
    assert (found.me, found.target, found.stale_counter) == (a, b, None)
    stale = store.introduction(NET, KA, "bee", RequestCounter(3, T + 300), T)
    assert (stale.me, stale.target, stale.stale_counter) == (None, None, 3)
    gone = store.introduction(NET, KA, "bee", RequestCounter(4, T + 300), T + 60)
    assert (gone.me, gone.target) == (a, None)  # B ran out
    assert store.introduction(NET, KA, "nobody", RequestCounter(5, T + 300), T).target is None
    assert store.introduction(NET2, KA, "bee", RequestCounter(1, T + 300), T) == Introduction()
    late = store.introduction(NET, KA, "bee", RequestCounter(6, T + 300), T + 100)
    assert (late.me, late.target) == (None, None)  # A ran out too


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_two_servers_sharing_one_store_serve_one_network(kind: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    one = Registry(open_store(kind, tmp_path, request), rng=random.Random(1).randbytes,
                   static_private=SERVER_KEY)
    # Same cookie secret from the store; the same key as an operator would copy it.
    two = Registry(open_store(kind, tmp_path, request), rng=random.Random(2).randbytes,
                   static_private=SERVER_KEY)
    secret = bytes(range(32))
    key, net = network_signing_key(secret), network_id(secret)
    addr = ("203.0.113.9", 4000)
    reply = p.decode_reply(one.handle(p.encode_cookie_request(p.CookieRequest(b"c" * 8)),
                                      addr, T)[0].data)
    assert isinstance(reply, p.CookieReply)

    node_private = b"\x0a" * 32

    def req(kind: int, counter: int, names: tuple[str, ...] = ()) -> bytes:
        request = p.Request(kind, net, public_key(node_private), counter, b"n" * 8, reply.cookie,
                            names)
        return seal_request(request, b"e" * 8, key, node_private, reply.server_key, b"\x0b" * 32)

    def opened(data: bytes) -> p.Reply | None:
        return open_reply(data, node_private, public_key(node_private), reply.server_key)

    registered = one.handle(req(p.REGISTER, 1, ("ssh-home",)), addr, T)
    assert opened(registered[0].data).__class__ is p.RegisterReply
    # The other server accepts the first one's cookie and knows the member.
    listed = opened(two.handle(req(p.LIST, 2), addr, T + 1)[0].data)
    assert isinstance(listed, p.Listed) and [m.names for m in listed.peers] == [("ssh-home",)]
    # A replay of counter 2 at the first server is refused: counters are shared too.
    stale = opened(one.handle(req(p.LIST, 2), addr, T + 2)[0].data)
    assert isinstance(stale, p.Refused) and stale.code == p.STALE_COUNTER and stale.counter == 2


def test_database_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    SQLiteStore(db).close()
    SQLiteStore(db).close()  # same version: fine
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="schema 99"):
        SQLiteStore(db)
