"""Denial of service: under a flood of initiations the responder stops doing Diffie-Hellman work
for initiations without a valid mac2, answers them with cookies, rate-limits sources that do
present a cookie, and a legitimate peer still gets through with its cookie.

DH work is counted by the responder's `counters.initiations_worked`: every initiation it consumes
costs X25519 with its static key (1 DH for garbage, 2 for a valid one), and nothing else does.
"""

from __future__ import annotations

import random

from tests.support.session_harness import (
    INITIATION_MAC1_OFFSET,
    INITIATION_SIZE,
    INITIATOR_PARAMS,
    NETWORK_SECRET_PSK,
    RESPONDER_PARAMS,
    WALL_EPOCH,
    Net,
    drain_events,
    make_device,
)
from tunnel.session import crypto, handshake
from tunnel.session.constants import HANDSHAKES_PER_TURN, UNDER_LOAD_QUEUE_LENGTH
from tunnel.session.cookie import CookieChecker, CookieGenerator, mac1_key
from tunnel.session.device import Device
from tunnel.session.events import HandshakeCompleted
from tunnel.session.wire import (
    COOKIE_REPLY_SIZE,
    HEADER_INITIATION,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
)

A_ADDR = ("10.0.0.1", 40001)
B_ADDR = ("10.0.0.2", 51820)
FLOOD_ADDR = ("10.6.6.6", 666)


def flood_initiations(responder: Device, count: int, seed: int) -> list[bytes]:
    """Initiations with a valid mac1 (as an insider can make) and random contents, no mac2."""
    rng = random.Random(seed)
    key = mac1_key(responder.public_key, NETWORK_SECRET_PSK)
    out = []
    for _ in range(count):
        body = HEADER_INITIATION + rng.randbytes(INITIATION_MAC1_OFFSET - 4)
        out.append(body + crypto.mac(key, body) + bytes(16))
    return out


def test_flood_stops_dh_work_and_legitimate_peer_gets_through() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    flood = iter(flood_initiations(b, 10_000, seed=3))

    def turn(count: int, step: float) -> None:
        for _ in range(count):
            b.receive_datagram(next(flood), FLOOD_ADDR, net.now, WALL_EPOCH + net.now)
        net.settle()  # runs b.handle_timer: one bounded batch of queued handshakes
        net.now += step

    # Below the threshold, every initiation costs DH work (they are garbage: 1 DH each).
    for _ in range(25):
        turn(10, 0.05)
    assert b.counters.cookie_sent == 0 and not b.is_under_load(net.now)
    assert b.counters.initiations_worked == 250 and b.counters.bad_handshake == 250

    # The flood: 250 initiations per turn keeps the queue past 1/8 of its size.
    worked_at_threshold = b.counters.initiations_worked
    session = None
    for i in range(39):
        turn(250, 0.15)  # 39 turns = 9,750 initiations over 5.85 s
        assert b.is_under_load(net.now)
        if i == 1:
            session = a.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH + net.now)
            net.settle()
    assert session is not None
    assert next(flood, None) is None  # all 10,000 sent: 250 slowly, 9,750 as a flood

    # Only the legitimate peer's initiation (2 DH, with a valid mac2) was worked on.
    assert b.counters.initiations_worked - worked_at_threshold == 1
    assert b.counters.bad_handshake == 250
    assert b.counters.cookie_sent > 1_000
    assert a.counters.cookie_received == 1
    assert session.is_established
    assert HandshakeCompleted(b.public_key, B_ADDR, True, RESPONDER_PARAMS) in drain_events(a)
    assert HandshakeCompleted(a.public_key, A_ADDR, False, INITIATOR_PARAMS) in drain_events(b)
    # No reply larger than its trigger: every cookie reply is 64 bytes, initiations 148.
    replies = [s for s in net.captured if s.data[0] == MESSAGE_COOKIE_REPLY]
    assert replies and all(len(s.data) == COOKIE_REPLY_SIZE < INITIATION_SIZE for s in replies)


def test_cookie_holders_are_rate_limited_per_source() -> None:
    net = Net()
    m_addr = ("10.7.7.7", 7777)
    m = net.add(m_addr, make_device(7))
    b = net.add(B_ADDR, make_device(2))
    garbage = iter(flood_initiations(b, 5_000, seed=4))

    def keep_loaded() -> None:
        for _ in range(UNDER_LOAD_QUEUE_LENGTH + HANDSHAKES_PER_TURN):
            b.receive_datagram(next(garbage), FLOOD_ADDR, net.now, WALL_EPOCH + net.now)

    keep_loaded()
    session = m.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH + net.now)
    net.settle()
    assert m.counters.cookie_received == 1
    # m now holds a cookie: craft 100 distinct initiations, all with a valid mac2.
    rng = random.Random(9)
    burst = []
    for i in range(100):
        message, _ = handshake.create_initiation(
            m.identity,
            b.public_key,
            rng.randbytes(4),
            rng.randbytes(32),
            WALL_EPOCH + net.now + i,
            session.cookies,
            net.now,
        )
        burst.append(message)
    before = b.counters.initiations_worked
    keep_loaded()
    for message in burst:
        b.receive_datagram(message, m_addr, net.now, WALL_EPOCH + net.now)
    for _ in range(20):  # work the whole queue off at one instant
        b.handle_timer(net.now, WALL_EPOCH + net.now)
    assert b.counters.rate_limited == 100 - 5  # burst of 5 per source address
    # 5 admitted: each costs 2 DH; the first is answered, the rest are floods (20 ms rule).
    assert b.counters.initiations_worked - before == 5
    assert b.counters.flood == 4


def test_mac2_flip_under_load_gets_a_cookie_not_a_handshake() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    for message in flood_initiations(b, UNDER_LOAD_QUEUE_LENGTH, seed=5):
        b.receive_datagram(message, FLOOD_ADDR, net.now, WALL_EPOCH + net.now)
    a.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH + net.now)
    net.collect()
    (initiation,) = [s for s in net.in_flight if s.data[0] == MESSAGE_INITIATION]
    net.in_flight.clear()
    flipped = initiation.data[:-1] + bytes([initiation.data[-1] ^ 1])
    b.receive_datagram(flipped, A_ADDR, net.now, WALL_EPOCH + net.now)
    while b.pending_handshakes:
        b.handle_timer(net.now, WALL_EPOCH + net.now)
    assert b.counters.initiations_worked == 0
    assert b.counters.cookie_sent == UNDER_LOAD_QUEUE_LENGTH + 1
    assert next(d for d, addr in b.datagrams_to_send() if addr == A_ADDR)[0] == MESSAGE_COOKIE_REPLY


def test_bad_mac1_is_never_answered_even_under_load() -> None:
    b = make_device(2)
    for message in flood_initiations(b, 500, seed=6):
        b.receive_datagram(message, FLOOD_ADDR, 0.0, WALL_EPOCH)
    junk = bytes([MESSAGE_INITIATION, 0, 0, 0]) + bytes(INITIATION_SIZE - 4)
    b.receive_datagram(junk, A_ADDR, 0.0, WALL_EPOCH)
    b.handle_timer(0.0, WALL_EPOCH)
    assert b.counters.bad_mac1 == 1
    assert all(addr == FLOOD_ADDR for _, addr in b.datagrams_to_send())


def test_cookie_is_bound_to_the_source_address() -> None:
    rng = random.Random(1)
    responder_public = crypto.public_key(rng.randbytes(32))
    checker = CookieChecker(responder_public, NETWORK_SECRET_PSK, rng.randbytes)
    generator = CookieGenerator(responder_public, NETWORK_SECRET_PSK)
    message = generator.add_macs(bytes(INITIATION_MAC1_OFFSET), 0.0)
    reply = checker.create_reply(message, bytes(4), A_ADDR, 0.0)
    assert not generator.consume_reply(reply[:-1] + bytes([reply[-1] ^ 1]), 0.0)
    assert generator.consume_reply(reply, 0.0)
    assert not generator.consume_reply(reply, 0.0)  # one reply per message
    with_cookie = generator.add_macs(bytes(INITIATION_MAC1_OFFSET), 1.0)
    assert checker.check_mac2(with_cookie, A_ADDR, 1.0)
    assert not checker.check_mac2(with_cookie, ("10.0.0.1", 40002), 1.0)
    assert not checker.check_mac2(with_cookie, A_ADDR, 500.0)  # secret expired
