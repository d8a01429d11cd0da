"""Fuzz targets of the secure session: the device's datagram entry (outer packets), handshake
messages, the transport parameters they carry, and cookie replies.

The device drops anything whose mac1 or AEAD tag does not verify, which mutants almost never
pass; so the handshake decoders and the cookie reply are fuzzed behind that check too. The
property that matters for them: nothing forged is ever accepted (an accepted message carries
exactly the authenticated bytes of a genuine one) and nothing raises.
"""

from __future__ import annotations

from tests.fuzz.target import Check, Target
from tests.support.session_harness import WALL_EPOCH, Net, SeededRng, make_device
from tunnel.addresses import Addr
from tunnel.session import crypto, handshake
from tunnel.session.cookie import CookieChecker, CookieGenerator, mac1_key
from tunnel.session.device import Device
from tunnel.session.params import (
    AES_256_GCM,
    CIPHER_NAMES,
    TransportParams,
    decode_params,
    encode_params,
)
from tunnel.session.wire import (
    INITIATION_BASE_SIZE,
    INITIATION_MAX_SIZE,
    MAC_SIZE,
    MACS_SIZE,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    RESPONSE_BASE_SIZE,
    RESPONSE_MAX_SIZE,
    is_initiation,
)

A: Addr = ("10.0.0.1", 1000)
B: Addr = ("10.0.0.2", 2000)
NOW = 1.0
PSK = bytes(range(32))


def _pair() -> tuple[Device, Device, list[bytes]]:
    """Two devices with an established session; every datagram they exchanged."""
    net = Net()
    a = net.add(A, make_device(1))
    b = net.add(B, make_device(2))
    a.connect(b.public_key, [B], net.now, WALL_EPOCH)
    net.settle()
    return a, b, [sent.data for sent in net.captured]


def setup_device() -> tuple[Check, list[bytes]]:
    a, b, exchanged = _pair()
    session = a.get_session(b.public_key)
    assert session is not None and session.is_established
    genuine = {session.seal(f"payload {i}".encode(), NOW) or b"" for i in range(4)}
    genuine.discard(b"")
    initiation = next(d for d in exchanged if is_initiation(d))
    checker = CookieChecker(b.public_key, PSK, SeededRng(3))
    cookie_reply = checker.create_reply(initiation, initiation[4:8], B, NOW)
    seeds = [*exchanged, *sorted(genuine), cookie_reply, b"\x20" + bytes(63), b"\x41" + bytes(40)]
    key = mac1_key(b.public_key, PSK)
    calls = 0

    def check(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls % 2:
            # Every other handshake-shaped mutant gets a valid mac1, as a member of the network
            # could compute: past the cheap check, into the queue and the Diffie-Hellman work.
            data = with_valid_mac1(data, key)
        sessions = len(b.sessions)
        result = b.receive(data, A, NOW, WALL_EPOCH + NOW)
        if result is not None:
            peer_session, payload = result
            assert data in genuine, "a datagram no peer sealed was accepted"
            assert peer_session.peer_public == a.public_key and isinstance(payload, bytes)
        deadline = b.get_timer()
        if deadline is not None and deadline <= NOW:
            b.handle_timer(NOW, WALL_EPOCH + NOW)
        assert len(b.sessions) == sessions, "a session appeared from fuzzed input"
        b.datagrams_to_send()
        while b.next_event() is not None:
            pass
        if calls % 64 == 0:
            # rejected input moved no replay window and killed no session: the next genuine
            # datagram still gets through
            fresh = session.seal(b"still there", NOW)
            assert fresh is not None
            assert b.receive(fresh, A, NOW, WALL_EPOCH + NOW) is not None, "session damaged"

    return check, seeds


def with_valid_mac1(data: bytes, key: bytes) -> bytes:
    # handshake messages carry transport parameters: any size the device reads
    sizes = {MESSAGE_INITIATION: (INITIATION_BASE_SIZE, INITIATION_MAX_SIZE),
             MESSAGE_RESPONSE: (RESPONSE_BASE_SIZE, RESPONSE_MAX_SIZE)}
    low, high = sizes.get(data[0], (1, 0)) if data else (1, 0)
    if not low <= len(data) <= high:
        return data
    at = len(data) - 2 * MAC_SIZE
    return data[:at] + crypto.mac(key, data[:at]) + data[at + MAC_SIZE :]


def _handshake_parts() -> tuple[handshake.Identity, handshake.Identity, bytes,
                                handshake.PendingInitiation, bytes]:
    rng = SeededRng(5)
    initiator = handshake.Identity.create(crypto.generate_private_key(rng), PSK)
    responder = handshake.Identity.create(crypto.generate_private_key(rng), PSK)
    initiation, pending = handshake.create_initiation(
        initiator, responder.static_public, rng(4), crypto.generate_private_key(rng),
        WALL_EPOCH, CookieGenerator(responder.static_public, PSK), NOW,
    )
    consumed = handshake.consume_initiation(responder, initiation)
    assert consumed is not None
    created = handshake.create_response(
        responder, consumed, rng(4), crypto.generate_private_key(rng),
        CookieGenerator(initiator.static_public, PSK), NOW,
    )
    assert created is not None
    return initiator, responder, initiation, pending, created[0]


def setup_initiation() -> tuple[Check, list[bytes]]:
    _, responder, initiation, _, _ = _handshake_parts()

    def check(data: bytes) -> None:
        consumed = handshake.consume_initiation(responder, data)
        if consumed is not None:
            # the sender index and the macs are not the handshake's to check
            assert data[:4] == initiation[:4]
            assert data[8:-MACS_SIZE] == initiation[8:-MACS_SIZE]

    return check, [initiation]


def setup_response() -> tuple[Check, list[bytes]]:
    initiator, _, _, pending, response = _handshake_parts()

    def check(data: bytes) -> None:
        keys = handshake.consume_response(initiator, pending, data)
        if keys is not None:
            assert data[:4] == response[:4]
            assert data[8:-MACS_SIZE] == response[8:-MACS_SIZE]

    return check, [response]


def setup_cookie_reply() -> tuple[Check, list[bytes]]:
    responder_public = crypto.public_key(crypto.generate_private_key(SeededRng(6)))
    checker = CookieChecker(responder_public, PSK, SeededRng(7))
    body = b"\x01\x00\x00\x00" + bytes(range(112))
    message = CookieGenerator(responder_public, PSK).add_macs(body, NOW)
    reply = checker.create_reply(message, message[4:8], A, NOW)

    def check(data: bytes) -> None:
        generator = CookieGenerator(responder_public, PSK)
        generator.add_macs(body, NOW)
        if generator.consume_reply(data, NOW):
            assert data[8:] == reply[8:], "a forged cookie reply was taken"
            assert generator.has_cookie
        else:
            assert not generator.has_cookie

    return check, [reply]


def setup_params() -> tuple[Check, list[bytes]]:
    """The TLVs inside an authenticated handshake payload (a member's build may send anything
    there): the first byte picks offer or choice, the rest is the block."""

    def check(data: bytes) -> None:
        response, block = bool(data[:1] and data[0] & 1), data[1:]
        params = decode_params(block, response)
        if params is None:
            return
        assert isinstance(params, TransportParams) and params.ciphers
        assert all(cipher in CIPHER_NAMES for cipher in params.ciphers)
        assert not response or len(params.ciphers) == 1
        # what was read encodes to a block that reads back the same
        chosen = params.cipher if response else None
        assert decode_params(encode_params(params, chosen), response) == params

    offer = encode_params(TransportParams())
    choice = encode_params(TransportParams(), chosen=AES_256_GCM)
    return check, [b"\x00" + offer, b"\x01" + choice, b"\x00", b"\x01\x01\x01\x02"]


TARGETS = (
    Target("session-device", setup_device),
    Target("handshake-initiation", setup_initiation, max_size=300),
    Target("handshake-response", setup_response, max_size=200),
    Target("transport-params", setup_params, max_size=200),
    Target("cookie-reply", setup_cookie_reply, max_size=150),
)
