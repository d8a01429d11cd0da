"""Transport parameters: the TLV codec, and what a handshake does with good, bad and missing ones.

Malformed parameters inside a genuine (encrypted, authenticated) handshake message are built with
the Noise functions directly, as a member with a broken or hostile build could send them; each
must be refused with no state changed. A version-1 initiation (the timestamp alone) is refused
with a reason the user can act on.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.session_harness import (
    NETWORK_SECRET_PSK,
    PAIR_ADDRS,
    WALL_EPOCH,
    Net,
    SeededRng,
    Sent,
    drain_events,
    handshake_pair,
    make_device,
    session_and_keys,
)
from tunnel.channel import constants as channel_constants
from tunnel.forward.udp_flows import MAX_UDP_FLOWS
from tunnel.session import crypto, handshake, noise
from tunnel.session.cookie import CookieGenerator
from tunnel.session.device import OLD_VERSION_REASON, Device
from tunnel.session.events import HandshakeCompleted, HandshakeRefused
from tunnel.session.params import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    DEFAULT_CONNECTION_WINDOW,
    DEFAULT_MAX_STREAMS,
    DEFAULT_STREAM_WINDOW,
    DEFAULT_UDP_FLOWS,
    MAX_DATAGRAM,
    MAX_STREAM_LIMIT,
    MAX_WINDOW,
    T_CIPHER,
    T_CIPHERS,
    T_MAX_DATAGRAM,
    T_STREAM_WINDOW,
    T_VERSION,
    TransportParams,
    choose_cipher,
    decode_params,
    encode_params,
)
from tunnel.session.session import Keypair
from tunnel.session.wire import (
    HEADER_INITIATION,
    HEADER_RESPONSE,
    INITIATION_BASE_SIZE,
    MAX_PARAMS_SIZE,
    RESPONSE_BASE_SIZE,
)

A_ADDR, B_ADDR = PAIR_ADDRS
VERSION = bytes((T_VERSION, 1, 2))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes((kind, len(value))) + value


# --- the codec ---------------------------------------------------------------------------------


def test_defaults_are_what_every_node_was_built_with() -> None:
    """Absent TLVs mean the values both ends shared before parameters existed."""
    assert DEFAULT_STREAM_WINDOW == channel_constants.INITIAL_STREAM_WINDOW
    assert DEFAULT_CONNECTION_WINDOW == channel_constants.INITIAL_CONNECTION_WINDOW
    assert DEFAULT_MAX_STREAMS == channel_constants.INITIAL_MAX_STREAMS
    assert DEFAULT_UDP_FLOWS == MAX_UDP_FLOWS


def test_round_trip_of_an_offer_and_of_a_choice() -> None:
    params = TransportParams(stream_window=65536, connection_window=1 << 20, max_streams=7,
                             max_udp_flows=9, max_datagram=1400,
                             ciphers=(CHACHA20_POLY1305, AES_256_GCM))
    assert decode_params(encode_params(params), response=False) == params
    chosen = decode_params(encode_params(params, chosen=AES_256_GCM), response=True)
    assert chosen is not None and chosen.ciphers == (AES_256_GCM,)
    assert chosen.stream_window == 65536 and chosen.max_datagram == 1400
    assert len(encode_params(TransportParams())) < MAX_PARAMS_SIZE


def test_absent_tlvs_take_their_defaults_and_unknown_ones_are_skipped() -> None:
    decoded = decode_params(VERSION + tlv(0x7F, b"future") + tlv(0xC0, b""), response=False)
    assert decoded == TransportParams(ciphers=(CHACHA20_POLY1305,))
    # a newer peer may offer ciphers this code does not know: they are skipped
    offer = decode_params(VERSION + tlv(T_CIPHERS, bytes((9, AES_256_GCM, 1))), response=False)
    assert offer is not None and offer.ciphers == (AES_256_GCM, CHACHA20_POLY1305)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no version
        tlv(T_STREAM_WINDOW, (65536).to_bytes(4, "big")),  # no version
        VERSION[:2],  # truncated TLV
        VERSION + bytes((T_STREAM_WINDOW,)),  # truncated header
        VERSION + bytes((T_STREAM_WINDOW, 4, 0, 1)),  # value shorter than its length
        VERSION + VERSION,  # a type twice
        tlv(T_VERSION, b"\x01"),  # version 1 sends no parameters
        tlv(T_VERSION, b""),  # an int of no bytes
        VERSION + tlv(T_STREAM_WINDOW, bytes(9)),  # an int of nine bytes
        VERSION + tlv(T_STREAM_WINDOW, (1024).to_bytes(2, "big")),  # window below a packet
        VERSION + tlv(T_STREAM_WINDOW, (1 << 31).to_bytes(4, "big")),  # window past 1 GiB
        VERSION + tlv(T_MAX_DATAGRAM, (1199).to_bytes(2, "big")),  # below QUIC's floor
        VERSION + tlv(T_MAX_DATAGRAM, (65508).to_bytes(3, "big")),  # past UDP's
        VERSION + tlv(T_CIPHERS, b""),  # offers nothing
        VERSION + tlv(T_CIPHERS, b"\x09"),  # offers nothing we know
        VERSION + tlv(0x7F, bytes(MAX_PARAMS_SIZE)),  # too long altogether
    ],
)
def test_malformed_offers_are_refused(data: bytes) -> None:
    assert decode_params(data, response=False) is None


@pytest.mark.parametrize("chosen", [b"", b"\x09", bytes((AES_256_GCM, CHACHA20_POLY1305))])
def test_a_response_must_choose_exactly_one_known_cipher(chosen: bytes) -> None:
    assert decode_params(VERSION + tlv(T_CIPHER, chosen), response=True) is None


@given(st.binary(max_size=200), st.booleans())
def test_garbage_never_raises(data: bytes, response: bool) -> None:
    decoded = decode_params(data, response)
    assert decoded is None or isinstance(decoded, TransportParams)


@given(st.integers(min_value=0, max_value=36))
def test_every_truncation_of_a_valid_block_is_refused_or_a_prefix_of_whole_tlvs(cut: int) -> None:
    data = encode_params(TransportParams())
    decoded = decode_params(data[:cut], response=False)
    if decoded is not None:  # a cut between TLVs leaves a shorter, valid block
        assert data[:cut].startswith(VERSION)


def test_the_initiators_most_preferred_shared_cipher_is_chosen() -> None:
    both = (AES_256_GCM, CHACHA20_POLY1305)
    assert choose_cipher(both, both) == AES_256_GCM
    assert choose_cipher((CHACHA20_POLY1305, AES_256_GCM), both) == CHACHA20_POLY1305
    assert choose_cipher(both, (CHACHA20_POLY1305,)) == CHACHA20_POLY1305
    assert choose_cipher((AES_256_GCM,), (CHACHA20_POLY1305,)) is None


def test_bad_local_settings_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="outside"):
        TransportParams(stream_window=10)
    with pytest.raises(ValueError, match="ciphers"):
        TransportParams(ciphers=())


# --- handshakes ---------------------------------------------------------------------------------


def current_keypair(device: Device, peer: Device) -> Keypair:
    return session_and_keys(device, peer)[1]


def test_each_side_learns_the_others_limits_and_both_use_the_chosen_cipher() -> None:
    a_params = TransportParams(stream_window=1 << 20, max_streams=10, max_datagram=9000)
    b_params = TransportParams(stream_window=1 << 16, max_streams=3, max_datagram=1400,
                               ciphers=(CHACHA20_POLY1305, AES_256_GCM))
    net, a, b = handshake_pair(a_params, b_params)
    a_session, b_session = a.get_session(b.public_key), b.get_session(a.public_key)
    assert a_session is not None and b_session is not None
    assert a_session.peer_params is not None and b_session.peer_params is not None
    assert a_session.peer_params.max_datagram == 1400 and a_session.peer_params.max_streams == 3
    assert b_session.peer_params == a_params  # the offer, as A made it
    # the initiator's preference wins among the ciphers both support
    assert a_session.cipher == b_session.cipher == AES_256_GCM
    completed = [e for e in drain_events(a) if isinstance(e, HandshakeCompleted)]
    assert completed and completed[0].params.stream_window == 1 << 16
    a_session.send(b"over aes-gcm", net.now)
    net.settle()
    assert drain_events(b)[-1].data == b"over aes-gcm"  # type: ignore[union-attr]


def test_a_responder_without_aes_gets_chacha() -> None:
    net, a, b = handshake_pair(TransportParams(),
                               TransportParams(ciphers=(CHACHA20_POLY1305,)))
    assert current_keypair(a, b).cipher == CHACHA20_POLY1305 == current_keypair(b, a).cipher
    session = a.get_session(b.public_key)
    assert session is not None
    session.send(b"over chacha", net.now)
    net.settle()
    assert drain_events(b)[-1].data == b"over chacha"  # type: ignore[union-attr]


def test_aes_gcm_keys_rekey_and_stop_before_its_confidentiality_limit() -> None:
    _net, a, b = handshake_pair(TransportParams(), TransportParams())
    initiator, responder = current_keypair(a, b), current_keypair(b, a)
    assert initiator.rekey_counter == 2**22 and initiator.reject_counter == 2**23
    assert responder.reject_counter == 2**23
    # the responder, which never rekeys on volume, stops at the limit and starts a handshake
    responder.send_counter = 2**23
    session = b.get_session(a.public_key)
    assert session is not None and session.seal(b"one too many", _net.now) is None
    assert session.pending is not None and b.counters.handshakes_completed == 1
    _net, a, b = handshake_pair(TransportParams(ciphers=(CHACHA20_POLY1305,)), TransportParams())
    assert current_keypair(a, b).reject_counter == 2**64 - 2**13 - 1


def no_state(device: Device) -> bool:
    return (not device._sessions and not device.indices.keypairs
            and not device.indices.handshakes and not device.replay_table()
            and not device._outbox)


def initiation_with_payload(sender: Device, receiver: Device, payload: bytes,
                            seed: int = 5) -> bytes:
    """A genuine initiation from `sender` (its real static key) whose encrypted payload is
    `payload`: what a member's broken or older build can send."""
    rng = SeededRng(seed)
    state = noise.initialize(handshake.PROLOGUE, receiver.public_key)
    body = noise.write_message_1(state, sender.identity.static_private, sender.public_key,
                                 crypto.generate_private_key(rng), receiver.public_key, payload)
    cookies = CookieGenerator(receiver.public_key, NETWORK_SECRET_PSK)
    return cookies.add_macs(HEADER_INITIATION + rng(4) + body, 0.0)


def deliver_to_b(payload: bytes) -> tuple[Net, Device, Device]:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    net.deliver(Sent(initiation_with_payload(a, b, payload), A_ADDR, B_ADDR))
    net.settle()
    return net, a, b


MALFORMED_BLOCKS = [
    VERSION[:2],
    VERSION + VERSION,
    VERSION + tlv(T_STREAM_WINDOW, b"\x00"),
    tlv(T_STREAM_WINDOW, (65536).to_bytes(4, "big")),
    b"\xff" * 40,
]


@pytest.mark.parametrize("block", [*MALFORMED_BLOCKS, VERSION + tlv(T_CIPHERS, b"\x09")])
def test_an_initiation_with_malformed_parameters_is_refused_without_state(block: bytes) -> None:
    _net, _a, b = deliver_to_b(crypto.tai64n(WALL_EPOCH) + block)
    assert b.counters.bad_handshake == 1
    assert no_state(b) and not drain_events(b)


def test_an_initiation_offering_only_unknown_or_unsupported_ciphers_gets_no_response() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2, params=TransportParams(ciphers=(CHACHA20_POLY1305,))))
    offer = encode_params(TransportParams(ciphers=(AES_256_GCM,)))
    net.deliver(Sent(initiation_with_payload(a, b, crypto.tai64n(WALL_EPOCH) + offer),
                     A_ADDR, B_ADDR))
    net.settle()
    assert b.counters.bad_handshake == 1 and not b._outbox
    assert not b.indices.keypairs


def test_a_version_1_initiation_is_refused_with_a_clear_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tunnel.session.device")
    _net, a, b = deliver_to_b(crypto.tai64n(WALL_EPOCH))  # the timestamp alone: version 1
    assert drain_events(b) == [HandshakeRefused(a.public_key, OLD_VERSION_REASON)]
    assert OLD_VERSION_REASON == ("peer runs an older ptunnel without transport parameters; "
                                  "upgrade both ends")
    assert b.counters.old_version == 1 and no_state(b)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"refused a handshake from {a.public_key.hex()[:16]} at 10.0.0.1:40001: "
                        f"{OLD_VERSION_REASON}"]


def test_a_version_1_initiation_from_outside_the_allow_list_is_not_reported() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2, allowed=[bytes(32)]))
    net.deliver(Sent(initiation_with_payload(a, b, crypto.tai64n(WALL_EPOCH)), A_ADDR, B_ADDR))
    net.settle()
    assert b.counters.not_allowed == 1 and b.counters.old_version == 0
    assert not drain_events(b)


def response_with_payload(net: Net, a: Device, b: Device, payload: bytes) -> bytes:
    """A genuine response from `b` (it holds the psk and read A's initiation) carrying
    `payload` as its parameters."""
    initiation = next(s.data for s in net.captured if s.data[:4] == HEADER_INITIATION)
    consumed = handshake.consume_initiation(b.identity, initiation)
    assert consumed is not None
    state = consumed.state.copy()
    body = noise.write_message_2(state, crypto.generate_private_key(SeededRng(7)),
                                 consumed.remote_ephemeral, consumed.peer_public,
                                 NETWORK_SECRET_PSK, payload)
    cookies = CookieGenerator(a.public_key, NETWORK_SECRET_PSK)
    return cookies.add_macs(HEADER_RESPONSE + bytes(4) + consumed.sender_index + body, net.now)


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # version 1: no parameters
        *MALFORMED_BLOCKS,
        VERSION + tlv(T_CIPHER, b"\x09"),  # a cipher nobody knows
        encode_params(TransportParams(), chosen=AES_256_GCM),  # one A did not offer
    ],
)
def test_a_response_with_bad_parameters_leaves_the_handshake_open(payload: bytes) -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1, params=TransportParams(ciphers=(CHACHA20_POLY1305,))))
    b = net.add(B_ADDR, make_device(2))
    net.filter = lambda sent: sent.dst != B_ADDR  # B never answers by itself
    a.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH)
    net.settle()
    session = a.get_session(b.public_key)
    assert session is not None and session.pending is not None
    pending = session.pending
    net.deliver(Sent(response_with_payload(net, a, b, payload), B_ADDR, A_ADDR))
    net.settle()
    assert a.counters.bad_handshake == 1
    assert session.pending is pending and not session.is_established
    assert not a.indices.keypairs and not drain_events(a)


def test_a_response_is_smaller_than_any_initiation_that_gets_one() -> None:
    """No amplification: the largest response we can send is shorter than the shortest
    initiation with parameters (a version-1 initiation gets no response at all)."""
    largest = TransportParams(stream_window=MAX_WINDOW, connection_window=MAX_WINDOW,
                              max_streams=MAX_STREAM_LIMIT, max_udp_flows=MAX_STREAM_LIMIT,
                              max_datagram=MAX_DATAGRAM)
    response = RESPONSE_BASE_SIZE + len(encode_params(largest, chosen=AES_256_GCM))
    assert response < INITIATION_BASE_SIZE + len(VERSION)
