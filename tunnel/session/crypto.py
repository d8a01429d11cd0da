"""Cryptographic primitives of the session layer, on `cryptography` and `hashlib`.

Noise spec rev 34 section 4 and WireGuard whitepaper section 5.4 name these functions:

| name            | here                | built on                                            |
|-----------------|---------------------|-----------------------------------------------------|
| DH              | `dh`                | X25519 (`cryptography`); all-zero output is refused |
| HASH            | `hash_`             | BLAKE2s-256 (`hashlib`)                             |
| HMAC, HKDF      | `hmac_hash`, `hkdf` | HMAC-BLAKE2s, Noise's HKDF (RFC 5869 with 1-3 outs) |
| MAC             | `mac`               | keyed BLAKE2s-128 (mac1, mac2, cookies)             |
| AEAD            | `aead_*`            | ChaCha20-Poly1305, nonce = 4 zero bytes + u64 LE    |
| XAEAD           | `xaead_*`           | see below                                           |

XAEAD: WireGuard encrypts cookies with XChaCha20-Poly1305 under a random 24-byte nonce.
`cryptography` has no XChaCha, and we write no cipher, so we keep the 24-byte nonce field and
its safety the same way XChaCha gets it: a subkey from keyed BLAKE2s over the first 16 nonce
bytes (the role HChaCha20 plays), then ChaCha20-Poly1305 with the last 8 bytes as nonce. Cookie
replies are therefore not WireGuard-compatible, which ptunnel is not anyway.

Decryption failures surface as `cryptography.exceptions.InvalidTag`, caught by name by callers,
or as None from the `*_or_none` helpers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

Rng = Callable[[int], bytes]

HASH_SIZE: Final = 32
KEY_SIZE: Final = 32
MAC_SIZE: Final = 16
NONCE_PREFIX: Final = b"\x00\x00\x00\x00"  # ChaCha20-Poly1305 nonce = 4 zero bytes + u64 LE counter
_XAEAD_PERSON: Final = b"ptn-xae1"  # BLAKE2s personalisation of the cookie-subkey derivation
# TAI64N label of 1970-01-01 00:00:10 TAI: 2^62 + 10 (cr.yp.to/libtai/tai64.html; as WireGuard)
_TAI64_BASE: Final = 0x400000000000000A
# Timestamps are rounded down to 2^24 ns (~16.8 ms) so they don't reveal the sender's clock
# precisely (wireguard-go tai64n.go "whitener").
_WHITENER_MASK: Final = 0x1000000 - 1


def hash_(*parts: bytes) -> bytes:
    """BLAKE2s-256 of the concatenated parts."""
    h = hashlib.blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def hmac_hash(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s-256 (Noise's HMAC; BLAKE2s' 64-byte block)."""
    return hmac.new(key, data, hashlib.blake2s).digest()


def hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise's HKDF: 1 to 3 outputs of HASH_SIZE bytes each."""
    temp_key = hmac_hash(chaining_key, input_key_material)
    out: list[bytes] = []
    previous = b""
    for i in range(1, outputs + 1):
        previous = hmac_hash(temp_key, previous + bytes((i,)))
        out.append(previous)
    return tuple(out)


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte output (WireGuard's MAC)."""
    return hashlib.blake2s(data, digest_size=MAC_SIZE, key=key).digest()


def generate_private_key(rng: Rng) -> bytes:
    """A fresh X25519 private key from the injected randomness (clamped by X25519 itself)."""
    return rng(KEY_SIZE)


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def dh(private: bytes, public: bytes) -> bytes | None:
    """X25519 shared secret, or None for a low-order public key (all-zero result)."""
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError:  # `cryptography` refuses an all-zero shared secret
        return None


def nonce(counter: int) -> bytes:
    """ChaCha20-Poly1305 nonce for a message counter."""
    return NONCE_PREFIX + counter.to_bytes(8, "little")


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 seal (one-off; the transport path keeps key objects instead)."""
    return ChaCha20Poly1305(key).encrypt(nonce(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 open; raises `InvalidTag` on any forgery."""
    return ChaCha20Poly1305(key).decrypt(nonce(counter), ciphertext, ad)


def _xaead(key: bytes, nonce24: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    subkey = hashlib.blake2s(nonce24[:16], key=key, person=_XAEAD_PERSON).digest()
    return ChaCha20Poly1305(subkey), NONCE_PREFIX + nonce24[16:24]


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """Seal under a random 24-byte nonce (see the module docstring)."""
    aead, short_nonce = _xaead(key, nonce24)
    return aead.encrypt(short_nonce, plaintext, ad)


def xaead_decrypt_or_none(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
    """Open a `xaead_encrypt` box; None if it was forged or damaged."""
    aead, short_nonce = _xaead(key, nonce24)
    try:
        return aead.decrypt(short_nonce, ciphertext, ad)
    except InvalidTag:
        return None


def tai64n(wall_time: float) -> bytes:
    """12-byte TAI64N timestamp of a Unix time (whitened); later times compare greater."""
    seconds = int(wall_time)
    nanoseconds = int((wall_time - seconds) * 1e9) & ~_WHITENER_MASK
    return (_TAI64_BASE + seconds).to_bytes(8, "big") + max(nanoseconds, 0).to_bytes(4, "big")
