"""The authenticated relay, attacked through the wire format: spoofers, stolen grant ids, other
members, caps, admission and the stats that report them. Registry in memory, virtual time."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rendezvous import protocol as p
from rendezvous.admission import parse_networks
from rendezvous.registry import Registry, Send
from rendezvous.store import SQLiteStore
from tests.rendezvous.test_registry import (
    A_ADDR,
    B_ADDR,
    NET,
    OTHER_SECRET,
    T0,
    Node,
    register,
    replies_to,
    snapshot,
)

C_ADDR = ("192.0.2.30", 3000)
X_ADDR, Y_ADDR = ("192.0.2.40", 4000), ("192.0.2.41", 4001)  # of another network
SPOOF_BURST = 2_000  # envelopes the spoofer sends at one instant
JUNK = bytes(1200)  # a full-size relayed datagram


def registry(store: SQLiteStore | None = None, seed: int = 1, **kwargs: Any) -> Registry:
    return Registry(store or SQLiteStore(), rng=random.Random(seed).randbytes, **kwargs)


def members() -> tuple[Node, Node]:
    """A and B, fresh nodes of our network."""
    return Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)


def outsiders() -> tuple[Node, Node]:
    """X and Y, fresh nodes of another network."""
    return Node(b"\xdd" * 32, X_ADDR, OTHER_SECRET), Node(b"\xee" * 32, Y_ADDR, OTHER_SECRET)


def introduced_pair(reg: Registry, a: Node, b: Node, now: float) -> tuple[bytes, bytes]:
    """Register `a` as "a" and `b` as "b", then a CONNECT from `a`: the tokens a->b, b->a."""
    register(reg, a, ("a",), now)
    register(reg, b, ("b",), now)
    return connect(reg, a, "b", now)


def connect(reg: Registry, src: Node, name: str, now: float) -> tuple[bytes, bytes]:
    out = reg.handle(src.request(p.CONNECT, (name,)), src.addr, now)
    (mine,) = replies_to(out, src.addr)
    (dest_addr,) = {s.addr for s in out if s.addr != src.addr}
    (theirs,) = replies_to(out, dest_addr)
    assert isinstance(mine, p.Introduced) and isinstance(theirs, p.Introduced)
    return mine.relay_token, theirs.relay_token


def two_networks(**caps: int) -> tuple[Registry, bytes, bytes, bytes]:
    """A registry with the relay `caps`, A and B introduced in our network and X and Y in
    another: it and the tokens a->b, b->a and x->y."""
    reg = registry(store=None, seed=1, **caps)
    ab, ba = introduced_pair(reg, *members(), T0)
    xy, _ = introduced_pair(reg, *outsiders(), T0)
    return reg, ab, ba, xy


def forwarded(out: list[list[Send]]) -> int:
    return sum(len(x) for x in out)


def test_a_spoofer_of_a_members_address_gets_nothing_forwarded_and_spends_none_of_its_budget(
) -> None:
    """Issue 12, finding 5: an off-path host sends RELAY_TO from A's IP:port toward B. It can
    see neither INTRODUCED nor A's envelopes, so it knows B's static key (the old envelope's
    only field) and at best guesses a grant id and tag."""
    reg = registry()
    a, b = members()
    register(reg, a, ("a",), T0)
    register(reg, b, ("b",), T0)
    introduction = reg.handle(a.request(p.CONNECT, ("b",)), A_ADDR, T0)  # A may relay to B
    rand = random.Random(5)
    spoofed = [bytes([p.RELAY_TO]) + b.static + JUNK]  # the old envelope: dest static, datagram
    spoofed += [bytes([p.RELAY_TO]) + rand.randbytes(32) + JUNK for _ in range(3)]
    got = forwarded([reg.handle(spoofed[i % len(spoofed)], A_ADDR, T0 + 1)
                     for i in range(SPOOF_BURST)])
    assert got == 0
    # A's whole budget is still there: its own burst goes through in full, at the same instant,
    # exactly as much as on a server that saw no spoofer at all.
    (to_a,) = replies_to(introduction, A_ADDR)
    assert isinstance(to_a, p.Introduced)
    env = p.encode_relay_to(to_a.relay_token, JUNK)
    own = forwarded([reg.handle(env, A_ADDR, T0 + 1) for _ in range(SPOOF_BURST)])
    quiet = registry()
    ab_quiet, _ = introduced_pair(quiet, *members(), T0)
    env_quiet = p.encode_relay_to(ab_quiet, JUNK)
    assert own == forwarded([quiet.handle(env_quiet, A_ADDR, T0 + 1) for _ in range(SPOOF_BURST)])
    assert own > 1000  # 12.5 MB/s per node, a burst of an eighth of that: ~1,267 envelopes
    assert reg.relay.stats["relay_forwarded"] == own
    assert reg.relay.stats["relay_node_limited"] == SPOOF_BURST - own


def test_an_on_path_observer_cannot_reuse_a_grant_id_for_its_own_datagrams() -> None:
    reg = registry()
    a, b = members()
    ab, _ = introduced_pair(reg, a, b, T0)
    seen = p.encode_relay_to(ab, b"A's datagram")
    grant_id, tag, _ = p.decode_relay_to(seen) or (b"", b"", b"")
    forged = [bytes([p.RELAY_TO]) + grant_id + tag + b"junk of the observer",
              bytes([p.RELAY_TO]) + grant_id + bytes(16) + JUNK,
              seen[:-1] + bytes([seen[-1] ^ 1]), seen + JUNK]
    for data in forged:
        assert reg.handle(data, A_ADDR, T0 + 1) == []
    assert reg.relay.stats["relay_bad_tag"] == len(forged)
    assert reg.relay.stats["relay_forwarded_bytes"] == 0
    assert len(reg.handle(seen, A_ADDR, T0 + 1)) == 1  # the genuine one still passes


def test_a_token_for_a_to_b_reaches_only_b_and_no_other_member_can_use_it() -> None:
    reg = registry()
    a, b = members()
    c = Node(b"\xcc" * 32, C_ADDR)
    ab, ba = introduced_pair(reg, a, b, T0)
    register(reg, c, ("c",), T0)
    ac, ca = connect(reg, a, "c", T0)
    assert len({ab, ba, ac, ca}) == 4
    # A's token toward B always lands at B, under A's key: it cannot be aimed at C.
    (fwd,) = reg.handle(p.encode_relay_to(ab, b"for c?"), A_ADDR, T0 + 1)
    assert fwd.addr == B_ADDR and p.decode_relay_from(fwd.data) == (a.static, b"for c?")
    # C, a member introduced to A only, can neither reach B nor act as A toward B: its own
    # token goes to A under C's key, and A's grant id with C's tag is refused.
    (to_a,) = reg.handle(p.encode_relay_to(ca, b"hi"), C_ADDR, T0 + 1)
    assert to_a.addr == A_ADDR and p.decode_relay_from(to_a.data) == (c.static, b"hi")
    grant_ab = p.relay_grant_id(ab)
    as_a = bytes([p.RELAY_TO]) + grant_ab + p.relay_tag(ca, b"as a") + b"as a"
    assert reg.handle(as_a, C_ADDR, T0 + 1) == []
    assert reg.handle(p.encode_relay_to(ba, b"x"), C_ADDR, T0 + 1)[0].addr == A_ADDR  # B's own
    assert reg.relay.stats["relay_bad_tag"] == 1
    # A member of another network, introduced in its own network, gets nowhere in ours.
    x, y = outsiders()
    xy, _ = introduced_pair(reg, x, y, T0)
    (fwd,) = reg.handle(p.encode_relay_to(xy, b"x"), x.addr, T0 + 1)
    assert fwd.addr == y.addr


def test_tokens_end_with_either_registration_and_a_new_introduction_issues_new_ones() -> None:
    reg = registry()
    a, b = members()
    ab, ba = introduced_pair(reg, a, b, T0)
    assert connect(reg, b, "a", T0 + 1) == (ba, ab)  # introduced again: the same tokens
    reg.handle(a.request(p.LEAVE), A_ADDR, T0 + 2)
    assert reg.handle(p.encode_relay_to(ba, b"x"), B_ADDR, T0 + 4) == []
    register(reg, a, ("a",), T0 + 5)
    assert reg.handle(p.encode_relay_to(ab, b"x"), A_ADDR, T0 + 5) == []  # old token: dead
    ab2, ba2 = connect(reg, a, "b", T0 + 5)
    assert {ab2, ba2}.isdisjoint({ab, ba})
    assert len(reg.handle(p.encode_relay_to(ab2, b"x"), A_ADDR, T0 + 5)) == 1


def test_the_network_cap_is_shared_by_the_members_of_one_network_only() -> None:
    reg, ab, ba, xy = two_networks(relay_rate=10_000_000, relay_network_rate=2_000_000,
                                   relay_total_rate=100_000_000)
    # A and B, each far below its node rate, together exhaust the network's 256 kB burst.
    both = forwarded([reg.handle(p.encode_relay_to(tok, JUNK), addr, T0 + 1)
                      for _ in range(200) for tok, addr in ((ab, A_ADDR), (ba, B_ADDR))])
    assert 180 <= both <= 230  # 256,000 / 1,233 ≈ 207
    assert reg.relay.stats["relay_network_limited"] == 400 - both
    assert reg.relay.stats["relay_node_limited"] == 0
    # The other network is not affected.
    other = forwarded([reg.handle(p.encode_relay_to(xy, JUNK), X_ADDR, T0 + 1)
                       for _ in range(100)])
    assert other == 100


def test_the_total_cap_bounds_the_whole_server() -> None:
    reg, ab, _, xy = two_networks(relay_rate=10_000_000, relay_network_rate=10_000_000,
                                  relay_total_rate=2_000_000)
    got = forwarded([reg.handle(p.encode_relay_to(tok, JUNK), addr, T0 + 1)
                     for _ in range(200) for tok, addr in ((ab, A_ADDR), (xy, X_ADDR))])
    assert 180 <= got <= 230  # two networks, one 256 kB burst between them
    assert reg.relay.stats["relay_total_limited"] == 400 - got
    # A refused packet costs the other buckets nothing: after the total refills, the node's
    # own budget (10 MB/s, 1.25 MB burst) is nearly whole.
    refilled = forwarded([reg.handle(p.encode_relay_to(ab, JUNK), A_ADDR, T0 + 60)
                          for _ in range(300)])
    assert refilled == got


def test_a_server_with_a_networks_list_refuses_other_networks_without_keeping_state() -> None:
    ours = NET.hex()
    policy = parse_networks(f"# ours\n{ours}  # the team\n\n", "networks.txt")
    store = SQLiteStore()
    reg = registry(store, admission=policy)
    a, b = members()
    introduced_pair(reg, a, b, T0)
    x = Node(b"\xdd" * 32, X_ADDR, OTHER_SECRET)
    x.get_cookie(reg, T0)
    before = snapshot(reg)
    for kind, names in ((p.REGISTER, ("x",)), (p.LIST, ()), (p.CONNECT, ("a",)),
                        (p.LEAVE, ())):
        data = x.request(kind, names)
        out = reg.handle(data, x.addr, T0 + 1)
        (msg,) = replies_to(out, x.addr)
        assert isinstance(msg, p.Refused) and msg.code == p.NETWORK_REFUSED
        assert len(out) == 1 and len(out[0].data) < len(data)
    assert snapshot(reg) == before  # not even a counter
    assert reg.stats["network_refused"] == 4
    # Grants a server with another policy wrote to the shared store are not honoured here.
    open_reg = registry(store, seed=2, static_private=reg.static_private)  # one deployment, one key
    y = Node(b"\xee" * 32, Y_ADDR, OTHER_SECRET)
    xy, _ = introduced_pair(open_reg, x, y, T0 + 2)
    assert len(open_reg.handle(p.encode_relay_to(xy, b"x"), x.addr, T0 + 3)) == 1
    assert reg.handle(p.encode_relay_to(xy, b"x"), x.addr, T0 + 3) == []
    assert reg.relay.stats["relay_network_refused"] == 1


def test_a_short_network_id_as_ptunnel_id_prints_it_admits_that_network() -> None:
    reg = registry(admission=parse_networks(NET.hex()[:16] + "\n", "f"))
    a = Node(b"\xaa" * 32, A_ADDR)
    (msg,) = replies_to(register(reg, a, ("a",), T0), A_ADDR)
    assert isinstance(msg, p.RegisterReply)


def test_the_stats_line_reports_the_relay() -> None:
    # Imported here so that the rest of this file also runs against a server without it (how
    # the tests were checked to fail on the code before the authenticated relay).
    from rendezvous.server import stats_line

    reg = registry(relay_rate=2_000_000)
    a, b = members()
    ab, _ = introduced_pair(reg, a, b, T0)
    env = p.encode_relay_to(ab, JUNK)
    sent = forwarded([reg.handle(env, A_ADDR, T0 + 1) for _ in range(300)])
    reg.handle(bytes([p.RELAY_TO]) + b.static + JUNK, A_ADDR, T0 + 1)  # a spoofer
    reg.handle(env[:40] + b"!" + env[41:], A_ADDR, T0 + 1)  # a forger
    reg.handle(b"\x40short", A_ADDR, T0 + 1)
    line = stats_line(reg)
    assert f"relay: forwarded {sent} packets, {sent * len(env)} bytes" in line
    assert "dropped malformed 1, unknown_grant 1, bad_tag 1" in line
    assert f"caps hit node {300 - sent}, network 0, total 0" in line
    assert line.startswith("stats accepted 3, introduced 1")


def test_a_grant_from_one_server_holds_at_another_sharing_its_store(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    one, two = registry(SQLiteStore(db), seed=1), registry(SQLiteStore(db), seed=2)
    a, b = members()
    _, ba = introduced_pair(one, a, b, T0)
    (fwd,) = two.handle(p.encode_relay_to(ba, b"via two"), B_ADDR, T0 + 1)
    assert fwd.addr == A_ADDR and p.decode_relay_from(fwd.data) == (b.static, b"via two")
    # Revoked through the store: A leaves at server one, server two stops within its cache TTL.
    one.handle(a.request(p.LEAVE), A_ADDR, T0 + 2)
    assert two.handle(p.encode_relay_to(ba, b"x"), B_ADDR, T0 + 3.5) == []
