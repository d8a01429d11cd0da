"""One-way Noise messages X and K (Noise spec rev 34, section 7.4), for the rendezvous link.

    X:                          K:
      <- s                        -> s
      ...                         <- s
      -> e, es, s, ss             ...
                                  -> e, es, ss

A one-way pattern is a single message from a sender to a recipient whose static key the sender
knows: no reply, no session, no state kept on either side. The rendezvous link uses both:

- **X**, node to server: the node knows the server's static key (pinned) and proves its own
  static key (``ss``), which travels encrypted, so the request's sender is authenticated and
  hidden from onlookers.
- **K**, server to node: both statics are known; only the server can write it (``ss``) and only
  that node can read it (``es`` with the node's static key).

Both use the standard protocol names below (`Noise_X_25519_ChaChaPoly_BLAKE2s`,
`Noise_K_25519_ChaChaPoly_BLAKE2s`), which differ from the sessions' IKpsk2, so a message of one
kind never opens as another; the caller binds its clear header in through the prologue. The
code reuses `noise.SymmetricState`; `tests/session/test_oneway.py` checks it against the
independent `noiseprotocol` implementation.

Cost: X25519 in `cryptography` is about 90 µs per scalar multiplication here, and turning raw
private bytes into a key object costs one more (it derives the public key). So static key
objects are built once (`_key_object`) and the static-static result (`ss`), which never changes
for a pair of keys, is cached (`_static_dh`): sealing a K message costs one multiplication for
the ephemeral key and one for `es`, opening an X message one for `es` (plus `ss` once per
sender).

A one-way message has no replay protection of its own (there is no reply to carry a fresh
ephemeral): the rendezvous protocol adds counters and nonces inside the payload.

`open_*` return None for anything forged, damaged or truncated, and never raise.
"""

from __future__ import annotations

import functools
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from tunnel.session.noise import DHLEN, TAGLEN, NoiseError, SymmetricState

X_PROTOCOL_NAME: Final = b"Noise_X_25519_ChaChaPoly_BLAKE2s"
K_PROTOCOL_NAME: Final = b"Noise_K_25519_ChaChaPoly_BLAKE2s"
X_OVERHEAD: Final = DHLEN + (DHLEN + TAGLEN) + TAGLEN  # e, encrypted s, payload tag: 96 bytes
K_OVERHEAD: Final = DHLEN + TAGLEN  # e, payload tag: 48 bytes


_PROBE_PRIVATE: Final = bytes(range(1, 33))  # any scalar: X25519 clamps it to a multiple of 8


def usable_static(key: bytes) -> bool:
    """False for a 32-byte string no message can be sealed to: a point of small order (its
    DH with every key is zero) or not 32 bytes. Check keys from the network before use."""
    try:
        return len(key) == DHLEN and bool(_dh(_PROBE_PRIVATE, key))
    except NoiseError:
        return False


# (our static, their static) pairs: a server's members, a node's servers
STATIC_DH_CACHE: Final = 4096


@functools.lru_cache(maxsize=64)
def _key_object(private: bytes) -> X25519PrivateKey:
    """A static private key as `cryptography` wants it, built once per key."""
    return X25519PrivateKey.from_private_bytes(private)


def _exchange(key: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # `cryptography` refuses an all-zero shared secret (small order)
        raise NoiseError("low-order public key") from None


@functools.lru_cache(maxsize=STATIC_DH_CACHE)
def _static_dh(private: bytes, public: bytes) -> bytes:
    """`ss`: the same for every message between two static keys, so computed once."""
    return _exchange(_key_object(private), public)


def _dh(private: bytes, public: bytes) -> bytes:
    return _exchange(_key_object(private), public)


def _start(name: bytes, prologue: bytes, *pre_message_keys: bytes) -> SymmetricState:
    state = SymmetricState.initialize(name)
    state.mix_hash(prologue)
    for key in pre_message_keys:
        state.mix_hash(key)
    return state


def seal_x(prologue: bytes, recipient_static: bytes, static_private: bytes,
           ephemeral_private: bytes, payload: bytes) -> bytes:
    """Noise X: `-> e, es, s, ss` + payload, to the holder of `recipient_static`."""
    state = _start(X_PROTOCOL_NAME, prologue, recipient_static)
    ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_private)  # one-shot: not cached
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    state.mix_hash(ephemeral_public)
    state.mix_key(_exchange(ephemeral, recipient_static))
    static_public = _key_object(static_private).public_key().public_bytes_raw()
    encrypted_static = state.encrypt_and_hash(static_public)
    state.mix_key(_static_dh(static_private, recipient_static))
    return ephemeral_public + encrypted_static + state.encrypt_and_hash(payload)


def open_x(prologue: bytes, static_private: bytes, static_public: bytes,
           message: bytes) -> tuple[bytes, bytes] | None:
    """Read a Noise X message: (the sender's proven static key, payload), or None."""
    if len(message) < X_OVERHEAD:
        return None
    state = _start(X_PROTOCOL_NAME, prologue, static_public)
    ephemeral = message[:DHLEN]
    try:
        state.mix_hash(ephemeral)
        state.mix_key(_dh(static_private, ephemeral))
        sender_static = state.decrypt_and_hash(message[DHLEN : 2 * DHLEN + TAGLEN])
        state.mix_key(_static_dh(static_private, sender_static))
        payload = state.decrypt_and_hash(message[2 * DHLEN + TAGLEN :])
    except (InvalidTag, NoiseError):
        return None
    return sender_static, payload


def seal_k(prologue: bytes, static_private: bytes, recipient_static: bytes,
           ephemeral_private: bytes, payload: bytes) -> bytes:
    """Noise K: `-> e, es, ss` + payload, from our static key to the holder of
    `recipient_static`."""
    static_public = _key_object(static_private).public_key().public_bytes_raw()
    state = _start(K_PROTOCOL_NAME, prologue, static_public, recipient_static)
    ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_private)  # one-shot: not cached
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    state.mix_hash(ephemeral_public)
    state.mix_key(_exchange(ephemeral, recipient_static))
    state.mix_key(_static_dh(static_private, recipient_static))
    return ephemeral_public + state.encrypt_and_hash(payload)


def open_k(prologue: bytes, static_private: bytes, static_public: bytes, sender_static: bytes,
           message: bytes) -> bytes | None:
    """Read a Noise K message that only the holder of `sender_static` can have written."""
    if len(message) < K_OVERHEAD:
        return None
    state = _start(K_PROTOCOL_NAME, prologue, sender_static, static_public)
    ephemeral = message[:DHLEN]
    try:
        state.mix_hash(ephemeral)
        state.mix_key(_dh(static_private, ephemeral))
        state.mix_key(_static_dh(static_private, sender_static))
        return state.decrypt_and_hash(message[DHLEN:])
    except (InvalidTag, NoiseError):
        return None
