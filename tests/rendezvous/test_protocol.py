"""Rendezvous wire format: golden bytes, round trips, and garbage that must never raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous import protocol as p
from tunnel.keys.netkeys import network_id, network_signing_key
from tunnel.node.peer import RELAY_OVERHEAD

SECRET = bytes(range(32))
KEY = network_signing_key(SECRET)
NET = network_id(SECRET)


def test_golden_cookie_request_is_padded_to_96_bytes() -> None:
    data = p.encode_cookie_request(p.CookieRequest(bytes.fromhex("0102030405060708")))
    assert data.hex() == "20" + "0102030405060708" + "00" * 87
    assert len(data) == p.COOKIE_REQUEST_SIZE


def test_golden_cookie_reply_carries_the_server_key() -> None:
    reply = p.CookieReply(bytes(8), bytes(range(20)), ("203.0.113.7", 40000), b"\x09" * 32)
    data = p.encode_cookie_reply(reply)
    assert data.hex() == (
        "21" + "00" * 8 + "000102030405060708090a0b0c0d0e0f10111213" + "04" + "cb007107" + "9c40"
        + "09" * 32
    )
    assert p.decode_reply(data) == reply
    assert len(data) <= p.COOKIE_REQUEST_SIZE
    # The largest possible reply (IPv6 endpoint) is still smaller than the request.
    v6 = p.encode_cookie_reply(p.CookieReply(bytes(8), bytes(20), ("2001:db8::1", 1), bytes(32)))
    assert len(v6) <= p.COOKIE_REQUEST_SIZE


def test_golden_register_request_header_and_payload() -> None:
    req = p.Request(p.REGISTER, NET, b"\x11" * 32, 7, b"\x22" * 8, b"\x33" * 20, ("ssh-home",),
                    (("10.0.0.2", 5000),))
    header = p.encode_request_header(p.REGISTER, b"\x44" * 8, req.cookie)
    assert header.hex() == "22" + "44" * 8 + "33" * 20
    parsed = p.decode_request_header(header + b"sealed")
    assert parsed == p.RequestHeader(p.REGISTER, b"\x44" * 8, b"\x33" * 20, b"sealed")
    assert parsed.prologue == p.request_prologue(header)
    payload = p.encode_request_payload(req, KEY)
    assert payload[:32] == NET
    assert payload[32:40].hex() == "0000000000000007"
    assert payload[40:48] == b"\x22" * 8
    assert payload[48:-64].hex() == "01" + "08" + b"ssh-home".hex() + "01" + "040a000002" + "1388"
    # Ed25519 is deterministic: the whole payload is a golden value.
    assert payload[-64:].hex() == GOLDEN_SIGNATURE
    assert p.decode_request_payload(parsed, b"\x11" * 32, payload) == req
    assert p.verify_request(req, payload)


GOLDEN_SIGNATURE = (
    "14c8e18a4ca0e5b577c6f1cb8a3e5edc5318df3a7c2882de655f65f6f9821805"
    "f04b6a5fbc7615bc2b345818785ac4797bb7a7b8f2f64daeb8b2d32549388702"
)


def test_golden_joined_with_ipv6_peer() -> None:
    peer = p.Peer(b"\x02" * 32, ("2001:db8::1", 443), 5, ("a", "bc"))
    data = p.encode_reply(p.Joined(b"\x01" * 8, peer))
    assert data.hex() == (
        "27" + "01" * 8 + "02" * 32 + "06" + "20010db8000000000000000000000001" + "01bb"
        + "00000005" + "02" + "0161" + "026263"
    )
    assert p.decode_reply(data) == p.Joined(b"\x01" * 8, peer)


def test_golden_refused_name_taken() -> None:
    msg = p.Refused(b"\x01" * 8, p.NAME_TAKEN, name="ssh-home", holder=b"\x05" * 32)
    data = p.encode_reply(msg)
    assert data.hex() == "2d" + "01" * 8 + "01" + "08" + b"ssh-home".hex() + "05" * 32
    assert p.decode_reply(data) == msg


# Regression goldens for the relay MAC (a change of person, key or size breaks every node).
GOLDEN_GRANT_ID = "c92d915338014289d44d5333f05e8f43"
GOLDEN_TAG = "2f7f638a18b892b48325d692a5d30a11"


def test_golden_relay_envelopes_keep_size() -> None:
    token = bytes(range(16))
    to = p.encode_relay_to(token, b"hi")
    grant_id, tag = p.relay_grant_id(token), p.relay_tag(token, b"hi")
    assert to.hex() == "40" + grant_id.hex() + tag.hex() + "6869"
    # Golden: BLAKE2s-128 with the persons "ptrly-id" / "ptrly-tg" (the tag keyed by the token,
    # over the length u32 and the first 64 bytes).
    assert grant_id.hex() == GOLDEN_GRANT_ID and tag.hex() == GOLDEN_TAG
    frm = p.encode_relay_from(b"\x08" * 32, b"hi")
    assert frm.hex() == "41" + "08" * 32 + "6869"
    # No amplification: what the server sends is never larger than what made it send.
    assert len(to) == len(frm) and p.RELAY_TO_OVERHEAD == p.RELAY_FROM_OVERHEAD == 33
    assert p.decode_relay_to(to) == (grant_id, tag, b"hi")
    assert p.relay_tag_valid(token, b"hi", tag)
    assert not p.relay_tag_valid(token, b"hI", tag) and not p.relay_tag_valid(bytes(16), b"hi", tag)
    assert p.decode_relay_from(frm) == (b"\x08" * 32, b"hi")
    assert p.decode_relay_from(to[:1] + b"x" * 31) is None
    assert p.decode_relay_to(b"\x40" + b"x" * 31) is None and p.decode_relay_to(frm) is None


def test_the_nodes_relay_budget_matches_both_envelopes() -> None:
    # The node sizes relayed channel packets with this constant: if RELAY_TO grew past it,
    # relayed datagrams would exceed the path's size; if RELAY_FROM did, the server amplified.
    assert RELAY_OVERHEAD == p.RELAY_TO_OVERHEAD == p.RELAY_FROM_OVERHEAD


def test_the_tag_binds_the_length_and_the_session_header() -> None:
    token, datagram = bytes(range(16)), bytes(range(256)) * 5
    tag = p.relay_tag(token, datagram)
    for i in (0, 8, 15, p.RELAY_TAG_COVERS - 1):  # type, receiver index, counter, ciphertext
        changed = datagram[:i] + bytes([datagram[i] ^ 1]) + datagram[i + 1:]
        assert not p.relay_tag_valid(token, changed, tag)
    assert not p.relay_tag_valid(token, datagram + b"x", tag)
    assert not p.relay_tag_valid(token, datagram[:-1], tag)


def test_the_grant_id_does_not_reveal_the_token() -> None:
    token = bytes(range(16))
    assert token not in p.encode_relay_to(token, b"x" * 100)
    assert p.relay_grant_id(token) != p.relay_grant_id(bytes(16))


def test_golden_introduced_carries_the_relay_token() -> None:
    msg = p.Introduced(b"\x01" * 8, b"\x05" * 32, ("192.0.2.1", 7000), (), ("a",), b"\x09" * 16)
    data = p.encode_reply(msg)
    assert data.hex() == ("2b" + "01" * 8 + "05" * 32 + "09" * 16 + "04" + "c0000201" + "1b58"
                          + "00" + "01" + "01" + b"a".hex())
    assert p.decode_reply(data) == msg
    assert p.decode_reply(data[:-1]) is None


def test_signature_binds_every_byte_the_static_key_the_cookie_and_the_network() -> None:
    req = p.Request(p.LIST, NET, b"\x11" * 32, 1, b"\x22" * 8, b"\x33" * 20)
    payload = p.encode_request_payload(req, KEY)
    assert p.verify_request(req, payload)
    # The same signed payload cannot be sent for another key, cookie, type or network.
    for other in (
        p.Request(p.LIST, NET, b"\x12" * 32, 1, b"\x22" * 8, b"\x33" * 20),
        p.Request(p.LIST, NET, b"\x11" * 32, 1, b"\x22" * 8, b"\x34" * 20),
        p.Request(p.LEAVE, NET, b"\x11" * 32, 1, b"\x22" * 8, b"\x33" * 20),
        p.Request(p.LIST, network_id(bytes(32)), b"\x11" * 32, 1, b"\x22" * 8, b"\x33" * 20),
    ):
        assert not p.verify_request(other, payload)
    for i in range(len(payload)):
        flipped = bytearray(payload)
        flipped[i] ^= 0x01
        assert not p.verify_request(req, bytes(flipped)), i
    bad_key = p.Request(p.LIST, b"\x00" * 5, b"\x11" * 32, 1, b"\x22" * 8, b"\x33" * 20)
    assert not p.verify_request(bad_key, payload)  # not a key at all: False, no exception


def test_invalid_names_and_counters_are_rejected_on_encode() -> None:
    for bad in ("", "UPPER", "a" * 64, "sp ace", "-lead"):
        req = p.Request(p.REGISTER, NET, b"\x11" * 32, 1, b"\x22" * 8, b"\x33" * 20, (bad,))
        with pytest.raises(ValueError):
            p.encode_request_payload(req, KEY)
    for counter in (-1, p.COUNTER_LIMIT, 2**64 - 1):
        req = p.Request(p.LIST, NET, b"\x11" * 32, counter, b"\x22" * 8, b"\x33" * 20)
        with pytest.raises(ValueError):
            p.encode_request_payload(req, KEY)


def test_paginate_keeps_pages_under_the_limit() -> None:
    peers = [p.Peer(bytes([i]) * 32, ("198.51.100.1", i), i, (f"node-{i}",)) for i in range(100)]
    pages = p.paginate(peers)
    assert len(pages) > 1
    for i, entries in enumerate(pages):
        data = p.encode_listed(b"\x00" * 8, i, len(pages), entries)
        assert len(data) <= p.MAX_PAGE_BYTES + 20
    decoded = [p.decode_reply(p.encode_listed(b"\x00" * 8, i, len(pages), e))
               for i, e in enumerate(pages)]
    assert [peer for d in decoded if isinstance(d, p.Listed) for peer in d.peers] == peers


def _largest_peer(i: int) -> p.Peer:
    names = tuple(f"{i:03d}{k}".ljust(p.MAX_NAME_LEN, "x") for k in range(p.MAX_NAMES))
    return p.Peer(i.to_bytes(32, "big"), ("2001:db8::1", 65535), 2**32 - 1, names)


def test_the_largest_member_list_fits_255_pages_of_unfragmented_datagrams() -> None:
    # Before: 510 members with long names needed more than 255 pages and `bytes([page, pages])`
    # raised ValueError in the server on every REGISTER and LIST of that network.
    peers = [_largest_peer(i) for i in range(p.MAX_MEMBERS_LIMIT)]
    assert len(p.encode_peer(peers[0])) == p.MAX_PEER_ENTRY
    pages = p.paginate(peers)
    assert len(pages) <= p.MAX_PAGES
    assert sum(len(e) for e in pages) == len(peers)  # nobody cut
    sealed_overhead = 32 + 16  # Noise K: ephemeral and tag
    for i, entries in enumerate(pages):
        data = p.encode_registered(b"\x00" * 8, ("2001:db8::2", 1), i, len(pages), entries)
        assert len(data) + sealed_overhead <= 1232  # IPv6 minimum MTU - IPv6 and UDP headers
    # A longer list (a cap above the limit) is cut at 255 pages, never raises.
    assert len(p.paginate(peers * 2)) == p.MAX_PAGES


# --- properties ------------------------------------------------------------------------------
names_st = st.from_regex(p.NAME_RE, fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str).filter(lambda h: not h.startswith("::ffff:"))
endpoints = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))
keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=8, max_size=8)
peers_st = st.builds(p.Peer, keys, endpoints, st.integers(0, 2**32 - 1),
                     st.lists(names_st, max_size=p.MAX_NAMES).map(tuple))


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([p.REGISTER, p.LIST, p.CONNECT, p.LEAVE]), static=keys,
       counter=st.integers(0, p.COUNTER_LIMIT - 1), nonce=nonces,
       cookie=st.binary(min_size=20, max_size=20),
       names=st.lists(names_st, min_size=1, max_size=p.MAX_NAMES).map(tuple),
       lan=st.lists(endpoints, max_size=p.MAX_LAN).map(tuple))
def test_request_round_trip(kind: int, static: bytes, counter: int, nonce: bytes, cookie: bytes,
                            names: tuple[str, ...], lan: tuple[p.Endpoint, ...]) -> None:
    if kind == p.CONNECT:
        names, lan = names[:1], ()
    elif kind != p.REGISTER:
        names, lan = (), ()
    req = p.Request(kind, NET, static, counter, nonce, cookie, names, lan)
    payload = p.encode_request_payload(req, KEY)
    header = p.decode_request_header(p.encode_request_header(kind, b"e" * 8, cookie))
    assert header is not None
    assert p.decode_request_payload(header, static, payload) == req
    assert p.verify_request(req, payload)


replies = st.one_of(
    st.builds(p.CookieReply, nonces, st.binary(min_size=20, max_size=20), endpoints, keys),
    st.builds(lambda n, o, ps: p.RegisterReply(n, o, 0, 1, tuple(ps)), nonces, endpoints,
              st.lists(peers_st, max_size=4)),
    st.builds(lambda n, ps: p.Listed(n, 0, 1, tuple(ps)), nonces, st.lists(peers_st, max_size=4)),
    st.builds(p.Joined, nonces, peers_st),
    st.builds(p.Left, nonces, keys),
    st.builds(p.Introduced, nonces, keys, endpoints,
              st.lists(endpoints, max_size=p.MAX_LAN).map(tuple),
              st.lists(names_st, max_size=p.MAX_NAMES).map(tuple),
              st.binary(min_size=p.RELAY_TOKEN_SIZE, max_size=p.RELAY_TOKEN_SIZE)),
    st.builds(lambda n: p.Refused(n, p.NETWORK_REFUSED), nonces),
    st.builds(lambda n, nm, h: p.Refused(n, p.NAME_TAKEN, name=nm, holder=h), nonces, names_st,
              keys),
    st.builds(lambda n, c: p.Refused(n, p.STALE_COUNTER, counter=c), nonces,
              st.integers(0, 2**64 - 1)),
    st.builds(lambda n, nm: p.Refused(n, p.UNKNOWN_PEER, name=nm), nonces, names_st),
    st.builds(lambda n: p.Refused(n, p.NOT_REGISTERED), nonces),
    st.builds(lambda n, c: p.Refused(n, p.NETWORK_FULL, cap=c), nonces, st.integers(0, 0xFFFF)),
)


@settings(max_examples=300, deadline=None)
@given(replies)
def test_reply_round_trip(msg: p.Reply) -> None:
    assert p.decode_reply(p.encode_reply(msg)) == msg


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_raises(data: bytes) -> None:
    p.decode_reply(data)
    header = p.decode_request_header(data)
    p.decode_cookie_request(data)
    p.decode_relay_to(data)
    p.decode_relay_from(data)
    if header is not None:
        req = p.decode_request_payload(header, b"\x11" * 32, data)
        if req is not None:
            p.verify_request(req, data)


@settings(max_examples=300, deadline=None)
@given(replies, st.data())
def test_truncated_or_extended_replies_are_dropped(msg: p.Reply, data: st.DataObject) -> None:
    raw = p.encode_reply(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    truncated = p.decode_reply(raw[:cut])
    # A prefix may only parse if it is itself a complete message (peer lists end anywhere).
    if truncated is not None:
        assert isinstance(truncated, p.RegisterReply | p.Listed)
    assert p.decode_reply(raw + b"\x00") is None or isinstance(msg, p.RegisterReply | p.Listed)
