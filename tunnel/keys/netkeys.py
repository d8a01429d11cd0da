"""Keys derived one-way from a network secret, and how keys are shown to people.

A *network* is a 256-bit secret shared by the machines of one person or team. Nothing derived
here lets anyone recover the secret. Each derivation has its own BLAKE2s personalisation so the
outputs are independent:

| derivation            | used for                                                        |
|-----------------------|-----------------------------------------------------------------|
| `handshake_psk`       | Noise IKpsk2 pre-shared key: outsiders cannot complete a handshake |
| `network_signing_key` | Ed25519 key that signs rendezvous registrations of this network |
| `network_id`          | its public half: the network's name at the rendezvous           |

The rendezvous only ever learns `network_id` (a public key), so a compromised server can verify
registrations but can neither forge them nor derive the handshake PSK.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

NETWORK_SECRET_SIZE = 32  # bytes; 256-bit secret
PUBLIC_KEY_SIZE = 32  # bytes; X25519 and Ed25519 public keys alike


def _derive(secret: bytes, person: bytes) -> bytes:
    if len(secret) != NETWORK_SECRET_SIZE:
        raise ValueError(f"network secret must be {NETWORK_SECRET_SIZE} bytes")
    return hashlib.blake2s(b"ptunnel network key", key=secret, person=person).digest()


def handshake_psk(secret: bytes) -> bytes:
    """The 32-byte pre-shared key mixed into every Noise handshake of this network."""
    return _derive(secret, b"ptn-psk1")


def network_signing_key(secret: bytes) -> Ed25519PrivateKey:
    """Ed25519 key that authenticates this network's messages to the rendezvous."""
    return Ed25519PrivateKey.from_private_bytes(_derive(secret, b"ptn-sig1"))


def network_id(secret: bytes) -> bytes:
    """The network's public identifier (an Ed25519 public key, 32 bytes)."""
    return network_signing_key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def encode_key(key: bytes) -> str:
    """A public key as people copy it: standard base64, like WireGuard's keys."""
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse a base64 public key; raises ValueError with a readable reason."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a base64 public key") from exc
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"{text!r} is not a public key: expected {PUBLIC_KEY_SIZE} bytes")
    return raw


def fingerprint(key: bytes) -> str:
    """A short, stable fingerprint of a public key, e.g. ``SHA256:3q2+7w0Y9k1XbN4a``."""
    digest = hashlib.sha256(key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii")[:16]


def short_network_id(nid: bytes) -> str:
    """The network id as shown to people: 16 hex digits are enough to tell networks apart."""
    return nid.hex()[:16]
