"""Message types and layouts of the datagrams between two nodes (WireGuard's layout).

One UDP socket per node carries everything; the first byte of each datagram is its type:

| type      | owner                      | message                                   |
|-----------|----------------------------|-------------------------------------------|
| 1         | session (this layer)       | handshake initiation, 148 B + parameters  |
| 2         | session                    | handshake response, 92 B + parameters     |
| 3         | session                    | cookie reply, 64 B                        |
| 4         | session                    | transport data, 32 B + payload            |
| 0x20-0x3F | rendezvous protocol        | `rendezvous/protocol.py`                  |
| 0x40-0x4F | relay envelopes            | `RELAY_TO`, `RELAY_FROM`: same file       |

A relay envelope carries a whole session datagram through the rendezvous server (which forwards
it by the policy in `rendezvous/relay.py`); the node unwraps it and hands the inner datagram here.

Session messages start with a 4-byte field: the type byte then 3 reserved zero bytes. Integers are
little-endian, as in WireGuard.

Initiation (148 B + P, P = the initiator's transport parameters, `params.py`)::

    | 0 type=1 | 1-3 zero | 4 sender index | 8 ephemeral (32) | 40 encrypted static (32+16) |
    | 88 encrypted (TAI64N timestamp (12) + parameters (P)) (+16) | 116+P mac1 (16) |
    | 132+P mac2 (16) |

Response (92 B + P, P = the responder's transport parameters)::

    | 0 type=2 | 1-3 zero | 4 sender index | 8 receiver index | 12 ephemeral (32) |
    | 44 encrypted parameters (P+16) | 60+P mac1 (16) | 76+P mac2 (16) |

Version 1 (ptunnel before transport parameters) had P = 0: a 148-byte initiation and a 92-byte
response. The device reads a version-1 initiation only to tell who sent it and why it is refused.

Cookie reply (64 B)::

    | 0 type=3 | 1-3 zero | 4 receiver index | 8 nonce (24) | 32 encrypted cookie (16+16) |

Transport data (32 B + payload)::

    | 0 type=4 | 1-3 zero | 4 receiver index | 8 counter (u64) | 16 AEAD(payload) |

The AEAD is the transport cipher the handshake negotiated (`params.py`): ChaCha20-Poly1305 or
AES-256-GCM, both with a 12-byte nonce of 4 zero bytes and the counter, and a 16-byte tag.
"""

from __future__ import annotations

from typing import Final

MESSAGE_INITIATION: Final = 1
MESSAGE_RESPONSE: Final = 2
MESSAGE_COOKIE_REPLY: Final = 3
MESSAGE_TRANSPORT: Final = 4
SESSION_MESSAGE_TYPES: Final = frozenset(
    {MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, MESSAGE_TRANSPORT}
)
# Reserved for other layers on the same socket; the session layer ignores them.
RENDEZVOUS_TYPES: Final = range(0x20, 0x40)
RELAY_TYPES: Final = range(0x40, 0x50)

# The 4-byte headers as they appear on the wire (type byte + 3 reserved zero bytes).
HEADER_INITIATION: Final = bytes((MESSAGE_INITIATION, 0, 0, 0))
HEADER_RESPONSE: Final = bytes((MESSAGE_RESPONSE, 0, 0, 0))
HEADER_COOKIE_REPLY: Final = bytes((MESSAGE_COOKIE_REPLY, 0, 0, 0))
HEADER_TRANSPORT: Final = bytes((MESSAGE_TRANSPORT, 0, 0, 0))

KEY_SIZE: Final = 32  # X25519 keys, BLAKE2s hashes, ChaCha20 keys
TAG_SIZE: Final = 16  # Poly1305 tag
MAC_SIZE: Final = 16  # mac1, mac2, cookie
TIMESTAMP_SIZE: Final = 12  # TAI64N
INDEX_SIZE: Final = 4  # sender and receiver indices (random, see `indextable.py`)
COOKIE_NONCE_SIZE: Final = 24

# without parameters: a version-1 initiation is exactly this
INITIATION_BASE_SIZE: Final = 148
RESPONSE_BASE_SIZE: Final = 92
# bytes; the longest parameter block read (today's is about 40): bounds every handshake message
MAX_PARAMS_SIZE: Final = 128
INITIATION_MAX_SIZE: Final = INITIATION_BASE_SIZE + MAX_PARAMS_SIZE
RESPONSE_MAX_SIZE: Final = RESPONSE_BASE_SIZE + MAX_PARAMS_SIZE
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16
TRANSPORT_OVERHEAD: Final = TRANSPORT_HEADER_SIZE + TAG_SIZE  # = 32 bytes added to every payload
TRANSPORT_MIN_SIZE: Final = TRANSPORT_OVERHEAD  # an empty payload is a keepalive
# Largest UDP payload over IPv4; anything longer cannot have come from a peer.
MAX_DATAGRAM_SIZE: Final = 65507
MAX_PAYLOAD_SIZE: Final = MAX_DATAGRAM_SIZE - TRANSPORT_OVERHEAD

#: What a session seals: the payload's bytes, or its parts in order (a channel packet as it was
#: built: header, frames, views of a stream's bytes). The C data plane seals the parts without
#: joining them first; its twin joins them.
Payload = bytes | list[bytes | memoryview]


def payload_bytes(payload: Payload) -> bytes:
    """`payload` as one bytes object (its parts joined where it comes in parts)."""
    return payload if isinstance(payload, bytes) else b"".join(payload)


def payload_size(payload: Payload) -> int:
    """The bytes `payload` seals, in whichever form it comes."""
    if isinstance(payload, bytes):
        return len(payload)
    size = 0
    for part in payload:
        size += len(part)
    return size

# The macs end every handshake message: mac1 covers everything before it, mac2 everything
# before mac2, so mac1 starts 2 * MAC_SIZE before the end.
MACS_SIZE: Final = 2 * MAC_SIZE


def is_session_message(datagram: bytes) -> bool:
    """True if the datagram's type byte belongs to this layer (types 1-4)."""
    return len(datagram) > 0 and datagram[0] in SESSION_MESSAGE_TYPES


def is_initiation(datagram: bytes) -> bool:
    """True if the datagram is a handshake initiation (type 1, 148 B + parameters).

    For the shell, which remembers the initiations `Device.datagrams_to_send` hands it (to resend
    them over a new path) without reading type bytes itself. Only the header and size are
    checked, not the macs: of a received datagram it says what it claims to be.
    """
    return (
        INITIATION_BASE_SIZE <= len(datagram) <= INITIATION_MAX_SIZE
        and datagram[0] == MESSAGE_INITIATION
    )
