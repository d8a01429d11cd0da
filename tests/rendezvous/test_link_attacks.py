"""Issue 12's attacks on the rendezvous, performed through the wire format against the registry.

Each test is an attack a member (or an on-path observer) made against the old protocol, where a
request named its static key in clear and nothing proved it. Now a request is a Noise X message
that proves its sender's key, so the attacker's best datagram is built here: its own key in the
Noise message, the victim's key wherever the format lets it write one.
"""

from __future__ import annotations

from rendezvous import protocol as p
from rendezvous.registry import Registry
from rendezvous.store import Member, SQLiteStore
from tests.rendezvous.test_registry import (
    A_ADDR,
    B_ADDR,
    KEY,
    NET,
    T0,
    Node,
    make_registry,
    register,
    replies_to,
    rng_for,
    snapshot,
)
from tunnel.path.sealing import seal_reply, seal_request
from tunnel.session import oneway
from tunnel.session.crypto import public_key

EVE_ADDR = ("192.0.2.66", 6666)


def test_a_member_cannot_move_another_members_live_name() -> None:
    reg = make_registry()
    victim, eve = Node(b"\xaa" * 32, A_ADDR), Node(b"\xee" * 32, EVE_ADDR)  # same network
    register(reg, victim, ("ssh-home",), T0)
    eve.get_cookie(reg, T0)
    before = snapshot(reg)
    # Eve claims the victim's key (signed for it): the Noise message proves Eve's key, so the
    # signature does not verify for the key the server acts for, and the request is dropped.
    forged = eve.request(p.REGISTER, ("ssh-home",), static=victim.static)
    assert reg.handle(forged, EVE_ADDR, T0 + 1) == []
    assert snapshot(reg) == before
    # Under her own key the name is held by a live other key: refused, naming the holder.
    (refused,) = replies_to(reg.handle(eve.request(p.REGISTER, ("ssh-home",)), EVE_ADDR, T0 + 2),
                            EVE_ADDR)
    assert isinstance(refused, p.Refused) and refused.code == p.NAME_TAKEN
    assert refused.holder == victim.static
    held = reg.store.member_by_name(NET, "ssh-home", T0 + 3)
    assert held is not None and held.static == victim.static and held.endpoint == A_ADDR


def test_a_member_cannot_leave_for_another_and_take_its_name() -> None:
    reg = make_registry()
    victim, eve = Node(b"\xaa" * 32, A_ADDR), Node(b"\xee" * 32, EVE_ADDR)
    register(reg, victim, ("ssh-home",), T0)
    register(reg, eve, ("eve",), T0)
    assert reg.handle(eve.request(p.LEAVE, static=victim.static), EVE_ADDR, T0 + 1) == []
    # A LEAVE acts for its sender's proven key only: Eve's own LEAVE removes Eve.
    reg.handle(eve.request(p.LEAVE), EVE_ADDR, T0 + 2)
    assert reg.store.member(NET, eve.static, T0 + 3) is None
    assert reg.store.member(NET, victim.static, T0 + 3) is not None
    out = register(reg, eve, ("ssh-home",), T0 + 4)
    (refused,) = replies_to(out, EVE_ADDR)
    assert isinstance(refused, p.Refused) and refused.code == p.NAME_TAKEN


def _raw_request(node: Node, reg: Registry, kind: int, counter: int, names: tuple[str, ...] = (),
                 static: bytes | None = None) -> bytes:
    """A request with any u64 counter (the encoder refuses counters ≥ 2^63), sealed as a node
    seals: what a modified client can send."""
    body = bytes([len(names)]) + b"".join(bytes([len(n)]) + n.encode() for n in names) + b"\x00"
    body = body if kind == p.REGISTER else b""
    unsigned = node.net + counter.to_bytes(8, "big") + b"n" * 8 + body
    signed = p.SIGN_CONTEXT + bytes([kind]) + (static or node.static) + node.cookie + unsigned
    payload = unsigned + node.key.sign(signed)
    header = p.encode_request_header(kind, b"e" * 8, node.cookie)
    return header + oneway.seal_x(p.request_prologue(header), reg.static_public, node.private,
                                  b"\x42" * 32, payload)


def test_a_huge_counter_is_refused_and_cannot_be_set_for_another_key() -> None:
    reg = make_registry()
    victim, eve = Node(b"\xaa" * 32, A_ADDR), Node(b"\xee" * 32, EVE_ADDR)
    register(reg, victim, ("ssh-home",), T0)
    eve.get_cookie(reg, T0)
    # Before: Eve registered the victim's key with counter 2^64-1; every later request of the
    # victim was STALE_COUNTER 2^64-1, on which its client raised OverflowError for good.
    before = snapshot(reg)
    forged = _raw_request(eve, reg, p.REGISTER, 2**64 - 1, ("ssh-home",), static=victim.static)
    assert reg.handle(forged, EVE_ADDR, T0 + 1) == []  # not the sender's key: dropped
    (refused,) = replies_to(reg.handle(_raw_request(eve, reg, p.LIST, 2**64 - 1), EVE_ADDR,
                                       T0 + 1), EVE_ADDR)
    assert isinstance(refused, p.Refused) and refused.code == p.BAD_REQUEST
    assert snapshot(reg) == before  # no counter stored, nothing moved
    # The victim's next request goes through as usual.
    (ok,) = replies_to(register(reg, victim, ("ssh-home",), T0 + 2), A_ADDR)
    assert isinstance(ok, p.RegisterReply)


def test_a_request_for_another_server_key_is_dropped_without_a_reply() -> None:
    reg = make_registry()
    eve = Node(b"\xee" * 32, EVE_ADDR)
    eve.get_cookie(reg, T0)
    eve.server_key = public_key(b"\x33" * 32)  # a server Eve wishes it were
    assert reg.handle(eve.request(p.LIST), EVE_ADDR, T0) == []
    assert reg.stats["unopened"] == 1


def test_a_request_whose_clear_header_was_changed_does_not_open() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    a.get_cookie(reg, T0)
    data = bytearray(a.request(p.LIST))
    data[1] ^= 1  # the echo: bound into the Noise prologue
    assert reg.handle(bytes(data), A_ADDR, T0) == []
    data = bytearray(a.request(p.LIST))
    data[0] = p.LEAVE  # the type
    assert reg.handle(bytes(data), A_ADDR, T0) == []
    assert reg.stats["unopened"] == 2


def _fill(reg: Registry, count: int) -> None:
    """`count` members with the longest names, straight into the store (the attack registered
    them one by one; the store holds the same rows)."""
    for i in range(count):
        names = tuple(f"{i:03d}{k}".ljust(p.MAX_NAME_LEN, "x") for k in range(p.MAX_NAMES))
        member = Member(NET, i.to_bytes(32, "big"), names, ("2001:db8::1", 40000 + i),
                        tuple(("fd00::1", 1000 + k) for k in range(p.MAX_LAN)), b"n" * 8,
                        T0, T0 + 3600)
        assert reg.store.register(member, T0).conflict_name == ""


def test_510_fake_members_with_long_names_break_no_member_list() -> None:
    # Before: past 255 pages `bytes([page, pages])` raised ValueError in the server on every
    # REGISTER and LIST of the network. Now the cap stops them, and even the largest allowed
    # cap pages within 255 datagrams that need no fragmentation.
    reg = Registry(SQLiteStore(), rng=rng_for(1).randbytes, max_members=p.MAX_MEMBERS_LIMIT)
    _fill(reg, p.MAX_MEMBERS_LIMIT - 1)
    a = Node(b"\xaa" * 32, A_ADDR)
    pages = replies_to(register(reg, a, ("ssh-home",), T0 + 1), A_ADDR)
    assert 1 < len(pages) <= p.MAX_PAGES
    assert all(isinstance(x, p.RegisterReply) and x.pages == len(pages) for x in pages)
    assert sum(len(x.peers) for x in pages if isinstance(x, p.RegisterReply)) == 509
    listed = reg.handle(a.request(p.LIST), A_ADDR, T0 + 2)
    assert len(listed) <= p.MAX_PAGES and all(len(s.data) <= 1232 for s in listed)
    # The 511th is refused with a code the client explains.
    (full,) = replies_to(register(reg, Node(b"\xbb" * 32, B_ADDR), ("laptop",), T0 + 3), B_ADDR)
    assert isinstance(full, p.Refused) and full.code == p.NETWORK_FULL
    assert full.cap == p.MAX_MEMBERS_LIMIT


def test_the_default_member_cap_refuses_a_new_member_but_not_a_refresh() -> None:
    reg = make_registry()
    _fill(reg, p.DEFAULT_MAX_MEMBERS - 1)
    a = Node(b"\xaa" * 32, A_ADDR)
    assert isinstance(replies_to(register(reg, a, ("a",), T0 + 1), A_ADDR)[0], p.RegisterReply)
    (full,) = replies_to(register(reg, Node(b"\xbb" * 32, B_ADDR), ("b",), T0 + 2), B_ADDR)
    assert isinstance(full, p.Refused) and full.code == p.NETWORK_FULL
    assert full.cap == p.DEFAULT_MAX_MEMBERS
    # A member already in refreshes as usual.
    out = reg.handle(a.request(p.REGISTER, ("a",)), A_ADDR, T0 + 3)
    assert isinstance(replies_to(out, A_ADDR)[0], p.RegisterReply)


def test_replies_are_sealed_to_the_proven_key_only() -> None:
    reg = make_registry()
    a, b = Node(b"\xaa" * 32, A_ADDR), Node(b"\xbb" * 32, B_ADDR)
    register(reg, a, ("ssh-home",), T0)
    out = register(reg, b, ("laptop",), T0 + 1)
    b.get_cookie(reg, T0 + 1)
    for send in out:
        assert p.decode_reply(send.data) is None  # not readable as plaintext
        other = a if send.addr == B_ADDR else b
        assert other.open(send.data) is None  # nor by another member
    # Garbage sealed with a valid signature is still garbage: the seal is checked first.
    req = p.Request(p.LIST, NET, a.static, 99, b"n" * 8, a.cookie)
    good = seal_request(req, b"e" * 8, KEY, a.private, reg.static_public, b"\x01" * 32)
    assert replies_to(reg.handle(good, A_ADDR, T0 + 2), A_ADDR)


def test_the_largest_sealed_datagrams_need_no_fragmentation() -> None:
    reg = make_registry()
    a = Node(b"\xaa" * 32, A_ADDR)
    a.get_cookie(reg, T0)
    names = tuple(f"{k}".ljust(p.MAX_NAME_LEN, "n") for k in range(p.MAX_NAMES))
    lan = tuple(("fd00::1", 1000 + k) for k in range(p.MAX_LAN))
    request = a.request(p.REGISTER, names, lan)
    peer = p.Peer(b"\x01" * 32, ("2001:db8::1", 1), 0, names)
    intro = p.encode_reply(p.Introduced(b"n" * 8, peer.static, peer.endpoint, lan, names,
                                        bytes(16)))
    joined = p.encode_reply(p.Joined(b"n" * 8, peer))
    sealed = [seal_reply(x, reg.static_private, a.static, b"\x01" * 32) for x in (intro, joined)]
    for datagram in (request, *sealed):
        assert len(datagram) <= 1232  # IPv6 minimum MTU minus the IPv6 and UDP headers
