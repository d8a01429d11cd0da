"""Handshake between two devices: success both ways, every way to fail closed, replays, tampering.

All on virtual time with seeded randomness (tests/session_harness.py).
"""

from __future__ import annotations

from dataclasses import astuple

import pytest

from tests.support.session_harness import (
    INITIATION_MAC1_OFFSET,
    INITIATION_SIZE,
    INITIATOR_PARAMS,
    NETWORK_SECRET_PSK,
    RESPONSE_SIZE,
    Net,
    Sent,
    drain_events,
    make_device,
)
from tunnel.session import crypto
from tunnel.session.cookie import mac1_key
from tunnel.session.device import Device
from tunnel.session.events import HandshakeCompleted, HandshakeFailed, PayloadReceived
from tunnel.session.wire import (
    COOKIE_REPLY_SIZE,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    TRANSPORT_OVERHEAD,
)

A_ADDR = ("10.0.0.1", 40001)
B_ADDR = ("10.0.0.2", 51820)


def pair(**b_kwargs: object) -> tuple[Net, Device, Device]:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2, **b_kwargs))  # type: ignore[arg-type]
    return net, a, b


def connected() -> tuple[Net, Device, Device]:
    net, a, b = pair()
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.settle()
    return net, a, b


def of_type(net: Net, kind: int) -> list[Sent]:
    return [s for s in net.captured if s.data[0] == kind]


def no_state(device: Device) -> bool:
    """The device holds no session, keys, handshake or queued output."""
    return (
        not device._sessions
        and not device.indices.keypairs
        and not device.indices.handshakes
        and not device.replay_table()
        and not device._outbox
    )


def test_handshake_then_data_both_ways() -> None:
    net, a, b = connected()
    assert [type(e) for e in drain_events(a)] == [HandshakeCompleted]
    # The responder reports completion only once the initiator proved its keys (keepalive).
    events = drain_events(b)
    assert events == [HandshakeCompleted(a.public_key, A_ADDR, False, INITIATOR_PARAMS)]
    assert [len(s.data) for s in net.captured[:2]] == [INITIATION_SIZE, RESPONSE_SIZE]

    a_session = a.get_session(b.public_key)
    b_session = b.get_session(a.public_key)
    assert a_session is not None and b_session is not None
    a_session.send(b"ping", net.now)
    net.settle()
    assert drain_events(b) == [PayloadReceived(a.public_key, b"ping", A_ADDR)]
    b_session.send(b"pong", net.now)
    net.settle()
    assert drain_events(a) == [PayloadReceived(b.public_key, b"pong", B_ADDR)]
    assert len(net.captured[-1].data) == 4 + TRANSPORT_OVERHEAD
    assert a.counters.handshakes_completed == b.counters.handshakes_completed == 1
    assert a.sessions == [a_session] and a_session.last_handshake == net.now


def test_initiator_static_key_travels_encrypted() -> None:
    net, a, _b = connected()
    initiation = of_type(net, MESSAGE_INITIATION)[0].data
    assert a.public_key not in initiation
    assert all(a.public_key not in s.data for s in net.captured)


def test_wrong_network_secret_fails_closed() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1, psk=bytes(32)))
    b = net.add(B_ADDR, make_device(2))
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.settle()
    assert b.counters.bad_mac1 == 1
    assert no_state(b)
    assert all(s.src == A_ADDR for s in net.captured)  # b never answered
    net.advance(100.0)
    failed = [e for e in drain_events(a) if isinstance(e, HandshakeFailed)]
    assert len(failed) == 1 and "no valid response" in failed[0].reason
    assert no_state(b) and b.counters.bad_mac1 > 15


def test_wrong_network_secret_even_with_correct_mac1_learns_nothing() -> None:
    """An initiator whose mac1 is right but psk wrong cannot read the response or finish."""
    net = Net()
    a = net.add(A_ADDR, make_device(1, psk=bytes(32)))
    b = net.add(B_ADDR, make_device(2))
    session = a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.collect()
    (sent,) = net.in_flight
    net.in_flight.clear()
    body = sent.data[:INITIATION_MAC1_OFFSET]
    forged = body + crypto.mac(mac1_key(b.public_key, NETWORK_SECRET_PSK), body) + bytes(16)
    net.deliver(Sent(forged, A_ADDR, B_ADDR))
    net.settle()
    assert a.counters.bad_mac1 == 1  # b's response is keyed to the real psk
    assert not session.is_established and not drain_events(a)
    assert not drain_events(b)  # b never saw key confirmation


def test_wrong_responder_key_fails_closed() -> None:
    net, a, b = pair()
    impostor = make_device(3)
    a.connect(impostor.public_key, [B_ADDR], net.now, net.now)
    net.settle()
    assert b.counters.bad_mac1 == 1 and no_state(b)
    assert not drain_events(a)


def test_unknown_initiator_refused_under_allow_list() -> None:
    other = make_device(9)
    net, a, b = pair(allowed=[other.public_key])
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.settle()
    assert b.counters.not_allowed == 1
    assert no_state(b)
    assert all(s.src == A_ADDR for s in net.captured)


def test_allow_list_admits_listed_initiator() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2, allowed=[a.public_key]))
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.settle()
    assert b.counters.handshakes_completed == 1


def test_replayed_initiation_response_and_data_are_rejected() -> None:
    net, a, b = connected()
    a_session = a.get_session(b.public_key)
    assert a_session is not None
    a_session.send(b"data", net.now)
    net.settle()
    drain_events(a), drain_events(b)
    captured = list(net.captured)
    before_a, before_b = astuple(a.counters), astuple(b.counters)
    for sent in captured:
        net.deliver(sent)
    net.settle()
    assert b.counters.replay == 1 + 2  # the initiation, then keepalive + data
    assert a.counters.unknown_index == 1  # the response: its handshake is finished
    assert not drain_events(a) and not drain_events(b)
    assert astuple(a.counters) != before_a and astuple(b.counters) != before_b
    assert a.counters.handshakes_completed == b.counters.handshakes_completed == 1


def test_replayed_initiation_rejected_even_after_session_expired() -> None:
    net, _a, b = connected()
    initiation = of_type(net, MESSAGE_INITIATION)[0]
    net.advance(600.0)  # keys wiped on both sides
    replays_before = b.counters.replay
    net.deliver(initiation)
    net.settle()
    assert b.counters.replay == replays_before + 1


@pytest.mark.parametrize("kind", [MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT])
def test_every_bit_flip_is_rejected(kind: int) -> None:
    net, a, b = connected()
    session = a.get_session(b.public_key)
    assert session is not None
    session.send(b"payload!", net.now)
    net.settle()
    drain_events(a), drain_events(b)
    original = [s for s in net.captured if s.data[0] == kind][-1]
    # mac2 is a denial-of-service token, not an integrity check: its flips are tested elsewhere.
    covered = len(original.data) - 16 if kind != MESSAGE_TRANSPORT else len(original.data)
    receiver = net.devices[original.dst]
    completed = receiver.counters.handshakes_completed
    for bit in range(covered * 8):
        data = bytearray(original.data)
        data[bit // 8] ^= 1 << (bit % 8)
        net.deliver(Sent(bytes(data), original.src, original.dst))
        net.settle()
        assert not drain_events(receiver), f"bit {bit} accepted"
    assert receiver.counters.handshakes_completed == completed
    assert not [s for s in net.captured if s.src == original.dst and s.data[0] == MESSAGE_RESPONSE][
        1:
    ]


def test_tampered_initiation_with_valid_mac1_is_rejected() -> None:
    """An insider who can recompute mac1 still cannot alter the Noise message."""
    net, a, b = pair()
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.collect()
    (sent,) = net.in_flight
    net.in_flight.clear()
    key = mac1_key(b.public_key, NETWORK_SECRET_PSK)
    for bit in range(8 * 8, INITIATION_MAC1_OFFSET * 8, 7):  # ephemeral, static, timestamp
        body = bytearray(sent.data[:INITIATION_MAC1_OFFSET])
        body[bit // 8] ^= 1 << (bit % 8)
        forged = bytes(body) + crypto.mac(key, bytes(body)) + bytes(16)
        net.deliver(Sent(forged, A_ADDR, B_ADDR))
        net.settle()
    assert b.counters.bad_handshake > 0
    assert b.counters.bad_mac1 == 0
    assert no_state(b)


@pytest.mark.parametrize("kind", [MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT])
def test_truncated_and_oversized_are_dropped(kind: int) -> None:
    net, a, b = connected()
    session = a.get_session(b.public_key)
    assert session is not None
    session.send(b"x" * 100, net.now)
    net.settle()
    drain_events(a), drain_events(b)
    original = [s for s in net.captured if s.data[0] == kind][-1]
    receiver = net.devices[original.dst]
    for length in range(len(original.data)):
        net.deliver(Sent(original.data[:length], original.src, original.dst))
    for extra in (1, 16, 70_000):
        net.deliver(Sent(original.data + bytes(extra), original.src, original.dst))
    net.settle()
    assert not drain_events(receiver)
    # Handshake messages vary in length with their parameters: a cut or grown one whose length
    # is still possible fails its mac1 instead.
    counters = receiver.counters
    assert counters.malformed + counters.bad_tag + counters.bad_mac1 >= len(original.data) + 3


def test_other_layers_types_are_ignored() -> None:
    net, _a, b = pair()
    for kind in (0, 5, 0x20, 0x3F, 0x40, 0x4F, 0xFF):
        net.deliver(Sent(bytes([kind]) + bytes(100), A_ADDR, B_ADDR))
    assert b.counters.not_ours == 7 and no_state(b)


def test_cookie_reply_is_smaller_than_initiation() -> None:
    assert COOKIE_REPLY_SIZE < RESPONSE_SIZE < INITIATION_SIZE


def test_initiation_to_several_candidates_completes_once() -> None:
    net, a, b = pair()
    dead = ("192.0.2.99", 9)
    session = a.connect(b.public_key, [dead, B_ADDR, ("10.0.0.2", 51821)], net.now, net.now)
    net.settle()
    initiations = of_type(net, MESSAGE_INITIATION)
    assert {s.dst for s in initiations} == {dead, B_ADDR, ("10.0.0.2", 51821)}
    assert session.is_established and session.endpoint == B_ADDR
    assert a.counters.handshakes_completed == 1


def test_roaming_follows_authenticated_packets_only() -> None:
    net, a, b = connected()
    a_session, b_session = a.get_session(b.public_key), b.get_session(a.public_key)
    assert a_session is not None and b_session is not None
    new_addr = ("172.16.0.5", 60000)
    net.devices[new_addr] = a
    datagram = a_session.seal(b"from a new network", net.now)
    assert datagram is not None
    net.deliver(Sent(datagram, new_addr, B_ADDR))
    assert b_session.endpoint == new_addr
    # A forged packet from elsewhere moves nothing.
    net.deliver(Sent(datagram[:-1] + bytes([datagram[-1] ^ 1]), ("203.0.113.1", 1), B_ADDR))
    assert b_session.endpoint == new_addr
    b_session.send(b"reply", net.now)
    net.collect()
    assert net.in_flight[-1].dst == new_addr


def test_candidates_learnt_during_the_handshake_get_the_same_initiation() -> None:
    net, a, b = pair()
    dead = ("192.0.2.99", 9)
    a.connect(b.public_key, [dead], net.now, net.now)
    net.settle()
    session = a.connect(b.public_key, [dead, B_ADDR], net.now, net.now)
    net.settle()
    first, second = of_type(net, MESSAGE_INITIATION)
    assert (first.dst, second.dst) == (dead, B_ADDR) and first.data == second.data
    assert session.is_established and session.endpoint == B_ADDR
