"""Message types and layouts of the datagrams between two nodes (WireGuard's layout).

One UDP socket per node carries everything; the first byte of each datagram is its type:

| type      | owner                      | message                                   |
|-----------|----------------------------|-------------------------------------------|
| 1         | session (this layer)       | handshake initiation, 148 B               |
| 2         | session                    | handshake response, 92 B                  |
| 3         | session                    | cookie reply, 64 B                        |
| 4         | session                    | transport data, 32 B + payload            |
| 0x20-0x3F | rendezvous protocol        | `rendezvous/protocol.py`                  |
| 0x40-0x4F | relay envelopes            | `RELAY_TO`, `RELAY_FROM`: same file       |

A relay envelope carries a whole session datagram through the rendezvous server (which forwards
it by the policy in `rendezvous/relay.py`); the node unwraps it and hands the inner datagram here.

Session messages start with a 4-byte field: the type byte then 3 reserved zero bytes. Integers are
little-endian, as in WireGuard.

Initiation (148 B)::

    | 0 type=1 | 1-3 zero | 4 sender index | 8 ephemeral (32) | 40 encrypted static (32+16) |
    | 88 encrypted TAI64N timestamp (12+16) | 116 mac1 (16) | 132 mac2 (16) |

Response (92 B)::

    | 0 type=2 | 1-3 zero | 4 sender index | 8 receiver index | 12 ephemeral (32) |
    | 44 encrypted empty payload (16) | 60 mac1 (16) | 76 mac2 (16) |

Cookie reply (64 B)::

    | 0 type=3 | 1-3 zero | 4 receiver index | 8 nonce (24) | 32 encrypted cookie (16+16) |

Transport data (32 B + payload)::

    | 0 type=4 | 1-3 zero | 4 receiver index | 8 counter (u64) | 16 ChaCha20-Poly1305(payload) |
"""

from __future__ import annotations

from typing import Final

MESSAGE_INITIATION: Final = 1
MESSAGE_RESPONSE: Final = 2
MESSAGE_COOKIE_REPLY: Final = 3
MESSAGE_TRANSPORT: Final = 4
SESSION_MESSAGE_TYPES = frozenset(
    {MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, MESSAGE_TRANSPORT}
)
# Reserved for other layers on the same socket; the session layer ignores them.
RENDEZVOUS_TYPES = range(0x20, 0x40)
RELAY_TYPES = range(0x40, 0x50)

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

INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16
TRANSPORT_OVERHEAD: Final = TRANSPORT_HEADER_SIZE + TAG_SIZE  # = 32 bytes added to every payload
TRANSPORT_MIN_SIZE: Final = TRANSPORT_OVERHEAD  # an empty payload is a keepalive
# Largest UDP payload over IPv4; anything longer cannot have come from a peer.
MAX_DATAGRAM_SIZE: Final = 65507
MAX_PAYLOAD_SIZE: Final = MAX_DATAGRAM_SIZE - TRANSPORT_OVERHEAD

# Offsets of the macs: mac1 covers everything before it, mac2 everything before mac2.
INITIATION_MAC1_OFFSET: Final = INITIATION_SIZE - 2 * MAC_SIZE
RESPONSE_MAC1_OFFSET: Final = RESPONSE_SIZE - 2 * MAC_SIZE


def is_session_message(datagram: bytes) -> bool:
    """True if the datagram's type byte belongs to this layer (types 1-4)."""
    return len(datagram) > 0 and datagram[0] in SESSION_MESSAGE_TYPES


def is_initiation(datagram: bytes) -> bool:
    """True if the datagram is a handshake initiation (type 1, 148 B).

    For the shell, which remembers the initiations `Device.datagrams_to_send` hands it (to resend
    them over a new path) without reading type bytes itself. Only the header and size are
    checked, not the macs: of a received datagram it says what it claims to be.
    """
    return len(datagram) == INITIATION_SIZE and datagram[0] == MESSAGE_INITIATION
