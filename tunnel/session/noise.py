"""Generic Noise handshake state for the IKpsk2 pattern (Noise spec rev 34, sections 5, 7, 9).

    IKpsk2:
      <- s
      ...
      -> e, es, s, ss
      <- e, ee, se, psk

This module knows nothing of WireGuard's framing, indices or macs (that is `handshake.py`), so the
Cacophony test vectors, with their own prologue, ephemerals and payloads, run through exactly this
code. DH is called through `crypto.dh` so tests can count Diffie-Hellman operations.

Failure: a forged or damaged message raises `InvalidTag` (from `cryptography`) or `NoiseError`
(a low-order public key). Callers catch both by name and then discard the (copied) state, so a
failed read never changes the state the caller kept.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from tunnel.session import crypto

PROTOCOL_NAME: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
DHLEN: Final = 32
TAGLEN: Final = 16
MESSAGE_1_OVERHEAD: Final = DHLEN + (DHLEN + TAGLEN) + TAGLEN  # e, encrypted s, payload tag = 96 B
MESSAGE_2_OVERHEAD: Final = DHLEN + TAGLEN  # e, payload tag = 48 B


class NoiseError(Exception):
    """A handshake message cannot be processed (e.g. a low-order public key)."""


def _dh(private: bytes, public: bytes) -> bytes:
    shared = crypto.dh(private, public)
    if shared is None:
        raise NoiseError("low-order public key")
    return shared


class CipherState:
    """Noise CipherState: a key and a counter nonce (section 5.1)."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.n = 0

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        out = self._aead.encrypt(crypto.nonce(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        out = self._aead.decrypt(crypto.nonce(self.n), ciphertext, ad)
        self.n += 1  # only after success: a forgery does not advance the nonce
        return out


class SymmetricState:
    """Noise SymmetricState: chaining key, handshake hash, current key (section 5.2)."""

    __slots__ = ("ck", "h", "k", "n")

    def __init__(self, ck: bytes, h: bytes, k: bytes | None = None, n: int = 0) -> None:
        self.ck = ck
        self.h = h
        self.k = k
        self.n = n

    @classmethod
    def initialize(cls, protocol_name: bytes) -> SymmetricState:
        if len(protocol_name) <= crypto.HASH_SIZE:
            h = protocol_name.ljust(crypto.HASH_SIZE, b"\x00")
        else:
            h = crypto.hash_(protocol_name)
        return cls(ck=h, h=h)

    def copy(self) -> SymmetricState:
        return SymmetricState(self.ck, self.h, self.k, self.n)

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, self.k = crypto.hkdf(self.ck, input_key_material, 2)
        self.n = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = crypto.hash_(self.h, data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.ck, temp_h, self.k = crypto.hkdf(self.ck, input_key_material, 3)
        self.n = 0
        self.mix_hash(temp_h)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.k is None:
            ciphertext = plaintext
        else:
            ciphertext = crypto.aead_encrypt(self.k, self.n, plaintext, self.h)
            self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.k is None:
            plaintext = ciphertext
        else:
            plaintext = crypto.aead_decrypt(self.k, self.n, ciphertext, self.h)
            self.n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """The two transport keys: (initiator -> responder, responder -> initiator)."""
        first, second = crypto.hkdf(self.ck, b"", 2)
        return first, second


def initialize(prologue: bytes, responder_static_public: bytes) -> SymmetricState:
    """State both sides hold before message 1: name, prologue and the pre-message `<- s`."""
    state = SymmetricState.initialize(PROTOCOL_NAME)
    state.mix_hash(prologue)
    state.mix_hash(responder_static_public)
    return state


def write_message_1(
    state: SymmetricState,
    static_private: bytes,
    static_public: bytes,
    ephemeral_private: bytes,
    remote_static: bytes,
    payload: bytes,
) -> bytes:
    """Initiator: `-> e, es, s, ss` + payload. Mutates `state`."""
    ephemeral_public = crypto.public_key(ephemeral_private)
    state.mix_hash(ephemeral_public)
    state.mix_key(ephemeral_public)  # psk modes also mix e into the key (spec section 9.2)
    state.mix_key(_dh(ephemeral_private, remote_static))
    encrypted_static = state.encrypt_and_hash(static_public)
    state.mix_key(_dh(static_private, remote_static))
    return ephemeral_public + encrypted_static + state.encrypt_and_hash(payload)


def read_message_1(
    state: SymmetricState, static_private: bytes, message: bytes
) -> tuple[bytes, bytes, bytes]:
    """Responder: read message 1; returns (remote ephemeral, remote static, payload).

    Mutates `state`; raises `InvalidTag`/`NoiseError`, so pass a copy and keep it on success only.
    """
    if len(message) < MESSAGE_1_OVERHEAD:
        raise NoiseError("message 1 too short")
    remote_ephemeral = message[:DHLEN]
    state.mix_hash(remote_ephemeral)
    state.mix_key(remote_ephemeral)
    state.mix_key(_dh(static_private, remote_ephemeral))
    remote_static = state.decrypt_and_hash(message[DHLEN : 2 * DHLEN + TAGLEN])
    state.mix_key(_dh(static_private, remote_static))
    payload = state.decrypt_and_hash(message[2 * DHLEN + TAGLEN :])
    return remote_ephemeral, remote_static, payload


def write_message_2(
    state: SymmetricState,
    ephemeral_private: bytes,
    remote_ephemeral: bytes,
    remote_static: bytes,
    psk: bytes,
    payload: bytes,
) -> bytes:
    """Responder: `<- e, ee, se, psk` + payload. Mutates `state`."""
    ephemeral_public = crypto.public_key(ephemeral_private)
    state.mix_hash(ephemeral_public)
    state.mix_key(ephemeral_public)
    state.mix_key(_dh(ephemeral_private, remote_ephemeral))
    state.mix_key(_dh(ephemeral_private, remote_static))
    state.mix_key_and_hash(psk)
    return ephemeral_public + state.encrypt_and_hash(payload)


def read_message_2(
    state: SymmetricState,
    static_private: bytes,
    ephemeral_private: bytes,
    psk: bytes,
    message: bytes,
) -> tuple[bytes, bytes]:
    """Initiator: read message 2; returns (remote ephemeral, payload). Mutates `state`."""
    if len(message) < MESSAGE_2_OVERHEAD:
        raise NoiseError("message 2 too short")
    remote_ephemeral = message[:DHLEN]
    state.mix_hash(remote_ephemeral)
    state.mix_key(remote_ephemeral)
    state.mix_key(_dh(ephemeral_private, remote_ephemeral))
    state.mix_key(_dh(static_private, remote_ephemeral))
    state.mix_key_and_hash(psk)
    payload = state.decrypt_and_hash(message[DHLEN:])
    return remote_ephemeral, payload
