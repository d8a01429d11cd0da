"""One-way Noise X and K against the independent `noiseprotocol` implementation, and forgeries."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from tunnel.session import crypto, oneway

# noiseprotocol warns when a test sets the ephemeral key, which is what a vector test does.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs")

RAND = random.Random(3)
SERVER_PRIV = RAND.randbytes(32)
SERVER_PUB = crypto.public_key(SERVER_PRIV)
NODE_PRIV = RAND.randbytes(32)
NODE_PUB = crypto.public_key(NODE_PRIV)
EPH = RAND.randbytes(32)
PROLOGUE = b"ptunnel test prologue"


def _reference(name: bytes, initiator: bool, static_priv: bytes, remote_pub: bytes | None,
               ephemeral: bytes | None = None) -> NoiseConnection:
    conn = NoiseConnection.from_name(name)
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static_priv)
    if remote_pub is not None:
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_pub)
    if ephemeral is not None:
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    conn.start_handshake()
    return conn


def test_x_is_byte_identical_to_noiseprotocol_and_opens_there() -> None:
    ours = oneway.seal_x(PROLOGUE, SERVER_PUB, NODE_PRIV, EPH, b"hello server")
    ref = _reference(b"Noise_X_25519_ChaChaPoly_BLAKE2s", True, NODE_PRIV, SERVER_PUB, EPH)
    assert ours == ref.write_message(b"hello server")
    reader = _reference(b"Noise_X_25519_ChaChaPoly_BLAKE2s", False, SERVER_PRIV, None)
    assert reader.read_message(ours) == b"hello server"
    assert oneway.open_x(PROLOGUE, SERVER_PRIV, SERVER_PUB, ours) == (NODE_PUB, b"hello server")


def test_k_is_byte_identical_to_noiseprotocol_and_opens_there() -> None:
    ours = oneway.seal_k(PROLOGUE, SERVER_PRIV, NODE_PUB, EPH, b"hello node")
    ref = _reference(b"Noise_K_25519_ChaChaPoly_BLAKE2s", True, SERVER_PRIV, NODE_PUB, EPH)
    assert ours == ref.write_message(b"hello node")
    reader = _reference(b"Noise_K_25519_ChaChaPoly_BLAKE2s", False, NODE_PRIV, SERVER_PUB)
    assert reader.read_message(ours) == b"hello node"
    assert oneway.open_k(PROLOGUE, NODE_PRIV, NODE_PUB, SERVER_PUB, ours) == b"hello node"


def test_wrong_prologue_key_or_sender_does_not_open() -> None:
    x = oneway.seal_x(PROLOGUE, SERVER_PUB, NODE_PRIV, EPH, b"p")
    assert oneway.open_x(PROLOGUE + b"!", SERVER_PRIV, SERVER_PUB, x) is None
    assert oneway.open_x(PROLOGUE, NODE_PRIV, NODE_PUB, x) is None
    k = oneway.seal_k(PROLOGUE, SERVER_PRIV, NODE_PUB, EPH, b"p")
    assert oneway.open_k(PROLOGUE + b"!", NODE_PRIV, NODE_PUB, SERVER_PUB, k) is None
    # A K message written by anyone but the expected sender is refused (`ss` differs).
    forged = oneway.seal_k(PROLOGUE, RAND.randbytes(32), NODE_PUB, EPH, b"p")
    assert oneway.open_k(PROLOGUE, NODE_PRIV, NODE_PUB, SERVER_PUB, forged) is None
    # An X message and a K message never open as each other.
    assert oneway.open_k(PROLOGUE, SERVER_PRIV, SERVER_PUB, NODE_PUB, x) is None


def test_low_order_ephemeral_is_refused_without_raising() -> None:
    x = oneway.seal_x(PROLOGUE, SERVER_PUB, NODE_PRIV, EPH, b"p")
    assert oneway.open_x(PROLOGUE, SERVER_PRIV, SERVER_PUB, bytes(32) + x[32:]) is None
    k = oneway.seal_k(PROLOGUE, SERVER_PRIV, NODE_PUB, EPH, b"p")
    assert oneway.open_k(PROLOGUE, NODE_PRIV, NODE_PUB, SERVER_PUB, bytes(32) + k[32:]) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    assert oneway.open_x(PROLOGUE, SERVER_PRIV, SERVER_PUB, data) is None
    assert oneway.open_k(PROLOGUE, NODE_PRIV, NODE_PUB, SERVER_PUB, data) is None


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=7))
def test_every_flipped_bit_is_refused(position: int, bit: int) -> None:
    x = bytearray(oneway.seal_x(PROLOGUE, SERVER_PUB, NODE_PRIV, EPH, b"payload" * 10))
    x[position % len(x)] ^= 1 << bit
    assert oneway.open_x(PROLOGUE, SERVER_PRIV, SERVER_PUB, bytes(x)) is None
