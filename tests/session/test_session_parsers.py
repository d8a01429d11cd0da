"""Property tests on every parser of the session layer: garbage never raises, never changes state.

Each property runs 10,000 derandomized examples (deterministic across runs). The device under
test holds an established session, so garbage aimed at live indices is exercised too.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.session_harness import (
    INITIATION_SIZE,
    NETWORK_SECRET_PSK,
    RESPONSE_SIZE,
    WALL_EPOCH,
    Net,
    make_device,
)
from tunnel.session import handshake
from tunnel.session.cookie import CookieChecker, CookieGenerator
from tunnel.session.device import Device
from tunnel.session.wire import (
    COOKIE_REPLY_SIZE,
    HEADER_COOKIE_REPLY,
    HEADER_INITIATION,
    HEADER_RESPONSE,
    HEADER_TRANSPORT,
)

MANY = settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
A_ADDR = ("10.0.0.1", 40001)
B_ADDR = ("10.0.0.2", 51820)


def established() -> tuple[Net, Device, Device]:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    a.connect(b.public_key, [B_ADDR], 0.0, WALL_EPOCH)
    net.settle()
    return net, a, b


NET, A, B = established()
B_INDICES = list(B.indices.keypairs)
# A second device with an initiation in flight, for garbage responses and cookie replies.
PENDING = make_device(3)
PENDING.connect(B.public_key, [B_ADDR], 0.0, WALL_EPOCH)
PENDING.datagrams_to_send()
PENDING_INDEX = next(iter(PENDING.indices.handshakes))


def snapshot(device: Device) -> tuple[Any, ...]:
    """Everything a dropped datagram must leave alone (counters may change)."""
    return (
        dict(device._sessions),
        dict(device.indices.keypairs),
        dict(device.indices.handshakes),
        device.replay_table(),
        len(device._queue),
        list(device._outbox),
        list(device._events),
        [
            (k.receive.replay.state(), k.send_counter)
            for k in device.indices.keypairs.values()
        ],
        [(s.endpoint, s.pending) for s in device._sessions.values()],
    )


def session_message(header: bytes, size: int) -> st.SearchStrategy[bytes]:
    """Right type and size, random contents: gets past the size check to mac1."""
    return st.binary(min_size=size - 4, max_size=size - 4).map(lambda rest: header + rest)


def transport_to(indices: list[bytes]) -> st.SearchStrategy[bytes]:
    """Transport datagrams addressed to a live index: they reach the AEAD."""
    return st.tuples(st.sampled_from(indices), st.binary(max_size=120)).map(
        lambda t: HEADER_TRANSPORT + t[0] + t[1]
    )


garbage = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.integers(0, 255), st.binary(max_size=200)).map(lambda t: bytes([t[0]]) + t[1]),
    session_message(HEADER_INITIATION, INITIATION_SIZE),
    session_message(HEADER_RESPONSE, RESPONSE_SIZE),
    session_message(HEADER_COOKIE_REPLY, COOKIE_REPLY_SIZE),
    transport_to(B_INDICES),
)


cookie_replies_to_pending = st.binary(
    min_size=COOKIE_REPLY_SIZE - 8, max_size=COOKIE_REPLY_SIZE - 8
).map(lambda rest: HEADER_COOKIE_REPLY + PENDING_INDEX + rest)

# Hypothesis costs ~0.5 ms an example here, so each property feeds one example to every parser
# it concerns rather than running 10,000 examples per parser in separate tests.


@MANY
@given(st.one_of(garbage, cookie_replies_to_pending))
def test_devices_drop_garbage_without_state_change(data: bytes) -> None:
    """`Device.receive_datagram` (all four types) on a responder, an initiator and a device with
    a handshake in flight; `Device.receive_transport` on live indices."""
    for device, source in ((B, A_ADDR), (A, B_ADDR), (PENDING, B_ADDR)):
        before = snapshot(device)
        device.receive_datagram(data, source, 1.0, WALL_EPOCH + 1.0)
        assert snapshot(device) == before
    if data[:1] == HEADER_TRANSPORT[:1]:
        before = snapshot(B)
        assert B.receive_transport(data, ("198.51.100.1", 1), 1.0) is None
        assert snapshot(B) == before


@MANY
@given(st.binary(min_size=INITIATION_SIZE - 4, max_size=INITIATION_SIZE - 4))
def test_handshake_parsers_reject_garbage(rest: bytes) -> None:
    """`consume_initiation` and `consume_response` past their size checks, into X25519 and the
    AEAD (in a device, mac1 stops such garbage earlier); neither touches kept state."""
    start = B.identity.responder_start
    before = (start.ck, start.h, start.k, start.n)
    assert handshake.consume_initiation(B.identity, HEADER_INITIATION + rest) is None
    assert (start.ck, start.h, start.k, start.n) == before

    session = PENDING.get_session(B.public_key)
    assert session is not None and session.pending is not None
    pending = session.pending
    before = (pending.state.ck, pending.state.h, pending.state.k, pending.state.n)
    response = HEADER_RESPONSE + rest[:4] + PENDING_INDEX + rest[4 : RESPONSE_SIZE - 8]
    assert len(response) == RESPONSE_SIZE
    assert handshake.consume_response(PENDING.identity, pending, response) is None
    assert (pending.state.ck, pending.state.h, pending.state.k, pending.state.n) == before


CHECKER = CookieChecker(B.public_key, NETWORK_SECRET_PSK, lambda n: bytes(n))


@MANY
@given(st.binary(max_size=INITIATION_SIZE + 8))
def test_cookie_parsers_reject_garbage(data: bytes) -> None:
    """`CookieGenerator.consume_reply`, `CookieChecker.check_mac1/check_mac2`."""
    assert not CHECKER.check_mac1(data)
    assert not CHECKER.check_mac2(data, A_ADDR, 0.0)
    generator = CookieGenerator(B.public_key, NETWORK_SECRET_PSK)
    message = generator.add_macs(bytes(116), 0.0)
    assert not generator.consume_reply(HEADER_COOKIE_REPLY + data[4:COOKIE_REPLY_SIZE], 0.0)
    assert not generator.consume_reply(data, 0.0)
    assert not generator.has_cookie
    assert generator.consume_reply(CHECKER.create_reply(message, bytes(4), A_ADDR, 0.0), 0.0)


def test_the_session_still_works_after_all_that_garbage() -> None:
    session = A.get_session(B.public_key)
    assert session is not None
    data = session.seal(b"still here", 1.0)
    assert data is not None
    result = B.receive_transport(data, A_ADDR, 1.0)
    assert result is not None and result[1] == b"still here"
