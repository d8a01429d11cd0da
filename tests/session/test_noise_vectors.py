"""Our Noise IKpsk2 code against the Cacophony vectors and the independent `noiseprotocol` package.

The vectors (tests/vectors/noise_ikpsk2_25519_chachapoly_blake2s.json) come unmodified from
cacophony.txt; see the "source" field there. The cross-check drives both sides with fixed keys:
ours as initiator against `noiseprotocol` as responder, and the other way round.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from noise.connection import Keypair, NoiseConnection

from tunnel.session import crypto, handshake, noise
from tunnel.session.cookie import CookieGenerator
from tunnel.session.params import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    TransportParams,
    decode_params,
    encode_params,
)
from tunnel.session.wire import HEADER_INITIATION, HEADER_RESPONSE, MACS_SIZE, TIMESTAMP_SIZE

# noiseprotocol warns when given a fixed ephemeral key, which is exactly what a cross-check needs.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs:UserWarning")

VECTORS = Path(__file__).parent / "vectors" / "noise_ikpsk2_25519_chachapoly_blake2s.json"


def load_vectors() -> list[dict[str, Any]]:
    data = json.loads(VECTORS.read_text())
    vectors: list[dict[str, Any]] = data["vectors"]
    assert vectors, "no IKpsk2 vectors found"
    return vectors


@pytest.mark.parametrize("vector", load_vectors())
def test_cacophony_vector(vector: dict[str, Any]) -> None:
    assert vector["protocol_name"].encode() == noise.PROTOCOL_NAME
    x = bytes.fromhex
    prologue = x(vector["init_prologue"])
    psk = x(vector["init_psks"][0])
    init_static, resp_static = x(vector["init_static"]), x(vector["resp_static"])
    init_eph, resp_eph = x(vector["init_ephemeral"]), x(vector["resp_ephemeral"])
    assert x(vector["init_remote_static"]) == crypto.public_key(resp_static)
    messages = vector["messages"]

    initiator = noise.initialize(prologue, crypto.public_key(resp_static))
    responder = noise.initialize(x(vector["resp_prologue"]), crypto.public_key(resp_static))

    msg1 = noise.write_message_1(
        initiator,
        init_static,
        crypto.public_key(init_static),
        init_eph,
        crypto.public_key(resp_static),
        x(messages[0]["payload"]),
    )
    assert msg1.hex() == messages[0]["ciphertext"]
    re, rs, payload = noise.read_message_1(responder, resp_static, msg1)
    assert rs == crypto.public_key(init_static)
    assert payload == x(messages[0]["payload"])

    msg2 = noise.write_message_2(responder, resp_eph, re, rs, psk, x(messages[1]["payload"]))
    assert msg2.hex() == messages[1]["ciphertext"]
    _, payload = noise.read_message_2(initiator, init_static, init_eph, psk, msg2)
    assert payload == x(messages[1]["payload"])
    assert initiator.h.hex() == vector["handshake_hash"] == responder.h.hex()

    i_send, i_recv = (noise.CipherState(k) for k in initiator.split())
    r_recv, r_send = (noise.CipherState(k) for k in responder.split())
    for index, message in enumerate(messages[2:]):
        sender, receiver = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        ciphertext = sender.encrypt_with_ad(b"", x(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"]
        assert receiver.decrypt_with_ad(b"", ciphertext) == x(message["payload"])


# Fixed keys for the cross-check: any 32 bytes are valid X25519 private keys.
PROLOGUE = b"ptunnel v1"
PSK = bytes(range(32))
I_STATIC, I_EPH = bytes([1]) * 32, bytes([2]) * 32
R_STATIC, R_EPH = bytes([3]) * 32, bytes([4]) * 32


def their_side(initiator: bool) -> NoiseConnection:
    conn = NoiseConnection.from_name(noise.PROTOCOL_NAME)
    conn.set_psks(psk=PSK)
    conn.set_prologue(PROLOGUE)
    if initiator:
        conn.set_as_initiator()
        conn.set_keypair_from_private_bytes(Keypair.STATIC, I_STATIC)
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, I_EPH)
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, crypto.public_key(R_STATIC))
    else:
        conn.set_as_responder()
        conn.set_keypair_from_private_bytes(Keypair.STATIC, R_STATIC)
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, R_EPH)
    conn.start_handshake()
    return conn


def test_ours_initiator_against_noiseprotocol_responder() -> None:
    theirs = their_side(initiator=False)
    ours = noise.initialize(PROLOGUE, crypto.public_key(R_STATIC))
    msg1 = noise.write_message_1(
        ours, I_STATIC, crypto.public_key(I_STATIC), I_EPH, crypto.public_key(R_STATIC), b"hello"
    )
    assert bytes(theirs.read_message(msg1)) == b"hello"
    msg2 = bytes(theirs.write_message(b"welcome"))
    _, payload = noise.read_message_2(ours, I_STATIC, I_EPH, PSK, msg2)
    assert payload == b"welcome"
    assert ours.h == theirs.get_handshake_hash()
    send, recv = (noise.CipherState(k) for k in ours.split())
    assert bytes(theirs.decrypt(send.encrypt_with_ad(b"", b"data i->r"))) == b"data i->r"
    assert recv.decrypt_with_ad(b"", bytes(theirs.encrypt(b"data r->i"))) == b"data r->i"


def test_noiseprotocol_initiator_against_ours_responder() -> None:
    theirs = their_side(initiator=True)
    ours = noise.initialize(PROLOGUE, crypto.public_key(R_STATIC))
    msg1 = bytes(theirs.write_message(b"hello"))
    re, rs, payload = noise.read_message_1(ours, R_STATIC, msg1)
    assert (rs, payload) == (crypto.public_key(I_STATIC), b"hello")
    msg2 = noise.write_message_2(ours, R_EPH, re, rs, PSK, b"welcome")
    assert bytes(theirs.read_message(msg2)) == b"welcome"
    assert ours.h == theirs.get_handshake_hash()
    recv, send = (noise.CipherState(k) for k in ours.split())
    assert recv.decrypt_with_ad(b"", bytes(theirs.encrypt(b"data i->r"))) == b"data i->r"
    assert bytes(theirs.decrypt(send.encrypt_with_ad(b"", b"data r->i"))) == b"data r->i"


def test_wrong_psk_fails_at_message_2() -> None:
    theirs = their_side(initiator=False)
    ours = noise.initialize(PROLOGUE, crypto.public_key(R_STATIC))
    msg1 = noise.write_message_1(
        ours, I_STATIC, crypto.public_key(I_STATIC), I_EPH, crypto.public_key(R_STATIC), b""
    )
    theirs.read_message(msg1)
    msg2 = bytes(theirs.write_message(b""))
    with pytest.raises(InvalidTag):
        noise.read_message_2(ours, I_STATIC, I_EPH, bytes(32), msg2)


# --- the handshake messages as ptunnel sends them, parameters and all ---------------------------

WALL = 1_700_000_000.0


def test_our_initiation_and_its_parameters_read_by_noiseprotocol() -> None:
    """ptunnel's whole initiation (timestamp + transport parameters as the payload) and a
    response carrying the responder's parameters, across the independent implementation."""
    theirs = their_side(initiator=False)
    identity = handshake.Identity.create(I_STATIC, PSK)
    r_public = crypto.public_key(R_STATIC)
    message, pending = handshake.create_initiation(
        identity, r_public, bytes(4), I_EPH, WALL, CookieGenerator(r_public, PSK), 0.0)
    payload = bytes(theirs.read_message(message[8:-MACS_SIZE]))
    assert payload[:TIMESTAMP_SIZE] == crypto.tai64n(WALL)
    assert decode_params(payload[TIMESTAMP_SIZE:], response=False) == identity.params
    chosen = encode_params(TransportParams(max_datagram=1400), chosen=CHACHA20_POLY1305)
    body = bytes(theirs.write_message(chosen))
    response = CookieGenerator(crypto.public_key(I_STATIC), PSK).add_macs(
        HEADER_RESPONSE + bytes(4) + bytes(4) + body, 0.0)
    keys = handshake.consume_response(identity, pending, response)
    assert keys is not None and keys.cipher == CHACHA20_POLY1305
    assert keys.peer_params.max_datagram == 1400
    ciphertext = bytes(theirs.encrypt(b"data r->i"))
    assert ChaCha20Poly1305(keys.receive_key).decrypt(crypto.nonce(0), ciphertext, b"") \
        == b"data r->i"


def test_noiseprotocol_initiation_with_parameters_answered_by_ours() -> None:
    theirs = their_side(initiator=True)
    offer = encode_params(TransportParams(stream_window=65536))
    initiation = CookieGenerator(crypto.public_key(R_STATIC), PSK).add_macs(
        HEADER_INITIATION + bytes(4) + bytes(theirs.write_message(crypto.tai64n(WALL) + offer)),
        0.0)
    identity = handshake.Identity.create(R_STATIC, PSK)
    consumed = handshake.consume_initiation(identity, initiation)
    assert consumed is not None and consumed.params is not None
    assert consumed.params.stream_window == 65536
    result = handshake.create_response(identity, consumed, bytes(4), R_EPH,
                                       CookieGenerator(crypto.public_key(I_STATIC), PSK), 0.0)
    assert result is not None
    response, keys = result
    answer = decode_params(bytes(theirs.read_message(response[12:-MACS_SIZE])), response=True)
    assert answer is not None and answer.ciphers == (keys.cipher,) == (AES_256_GCM,)
    # the split keys agree (noiseprotocol's transport is ChaCha20-Poly1305 whatever we chose)
    ciphertext = bytes(theirs.encrypt(b"data i->r"))
    assert ChaCha20Poly1305(keys.receive_key).decrypt(crypto.nonce(0), ciphertext, b"") \
        == b"data i->r"
