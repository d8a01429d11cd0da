"""Transport parameters: what each side tells the other inside the encrypted handshake (sans-IO).

The initiation's payload is the TAI64N timestamp followed by the initiator's parameters; the
response's payload is the responder's parameters. Both travel inside Noise's encrypted and
authenticated payloads, so nobody on the path (the rendezvous included) can read or change them.
Each side then *sends* within the peer's limits and *receives* within its own (as QUIC's
transport parameters, RFC 9000 §7.4, §18): the windows are the first credit the peer gives us,
`max_streams` how many streams we may open, `max_datagram` the largest UDP payload it reads.

Encoding: a sequence of TLVs, nothing else (unknown types are skipped, so a newer peer may add
some; a type may appear once)::

    | type (1 B) | length (1 B) | value (length B) |

| type | name                 | value                                     | if absent          |
|------|----------------------|-------------------------------------------|--------------------|
| 0x01 | `version`            | unsigned int; this code is version 2      | malformed          |
| 0x02 | `stream_window`      | bytes; first credit on each stream        | INITIAL_STREAM_... |
| 0x03 | `connection_window`  | bytes; first credit on the whole channel  | INITIAL_CONNEC...  |
| 0x04 | `max_streams`        | streams the peer may open at once         | INITIAL_MAX_ST...  |
| 0x05 | `max_udp_flows`      | UDP flows per exposed service             | DEFAULT_UDP_FLOWS  |
| 0x06 | `max_datagram`       | largest UDP payload the sender reads      | 65507              |
| 0x07 | `ciphers`            | transport ciphers it supports, preferred  | ChaCha20-Poly1305  |
|      |                      | first, one byte each (initiation)         |                    |
| 0x08 | `cipher`             | the cipher chosen (response only)         | ChaCha20-Poly1305  |

Unsigned ints are big-endian, 1-8 bytes. Version 1 (ptunnel before transport parameters) sent
an initiation payload of the timestamp alone and an empty response payload; it has no TLVs.

`decode_params` returns None for anything malformed (a truncated TLV, a repeated type, an int
too long or out of range, no version) and never raises; the handshake then drops the message
with no state changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tunnel.session.wire import MAX_PARAMS_SIZE

# --- protocol -------------------------------------------------------------------------------

#: this code's protocol version; version 1 carried no parameters at all
PROTOCOL_VERSION: Final = 2

T_VERSION: Final = 0x01
T_STREAM_WINDOW: Final = 0x02
T_CONNECTION_WINDOW: Final = 0x03
T_MAX_STREAMS: Final = 0x04
T_MAX_UDP_FLOWS: Final = 0x05
T_MAX_DATAGRAM: Final = 0x06
T_CIPHERS: Final = 0x07
T_CIPHER: Final = 0x08

#: transport data ciphers (the Noise handshake itself always uses ChaCha20-Poly1305)
CHACHA20_POLY1305: Final = 1
AES_256_GCM: Final = 2
CIPHER_NAMES: Final = {CHACHA20_POLY1305: "chacha20-poly1305", AES_256_GCM: "aes-256-gcm"}

# Defaults of absent TLVs: the values every version-1 node was built with (tunnel/channel/
# constants.py, tunnel/forward/udp_flows.py), so they mean what they always meant.
DEFAULT_STREAM_WINDOW: Final = 2 * 1024 * 1024
DEFAULT_CONNECTION_WINDOW: Final = 3 * 1024 * 1024
DEFAULT_MAX_STREAMS: Final = 4096
DEFAULT_UDP_FLOWS: Final = 4096
#: bytes; the largest UDP payload over IPv4
MAX_DATAGRAM: Final = 65507

# Bounds of the values a peer may announce: below these a channel could not make progress
# (a window smaller than a packet, a datagram below QUIC's 1,200-byte floor); above them the
# number means nothing (a window past 1 GiB, more streams than ids worth tracking).
MIN_WINDOW: Final = 16 * 1024
MAX_WINDOW: Final = 1 << 30
MAX_STREAM_LIMIT: Final = 1 << 20
MIN_DATAGRAM: Final = 1200

_INT_BOUNDS: Final = {
    T_VERSION: (2, 255),  # version 1 sent no parameters
    T_STREAM_WINDOW: (MIN_WINDOW, MAX_WINDOW),
    T_CONNECTION_WINDOW: (MIN_WINDOW, MAX_WINDOW),
    T_MAX_STREAMS: (1, MAX_STREAM_LIMIT),
    T_MAX_UDP_FLOWS: (1, MAX_STREAM_LIMIT),
    T_MAX_DATAGRAM: (MIN_DATAGRAM, MAX_DATAGRAM),
}


@dataclass(frozen=True, slots=True)
class TransportParams:
    """One side's limits on what it receives, and the ciphers it can use for transport data."""

    version: int = PROTOCOL_VERSION
    stream_window: int = DEFAULT_STREAM_WINDOW
    connection_window: int = DEFAULT_CONNECTION_WINDOW
    max_streams: int = DEFAULT_MAX_STREAMS
    max_udp_flows: int = DEFAULT_UDP_FLOWS
    max_datagram: int = MAX_DATAGRAM
    #: initiation: the ciphers offered, preferred first; response: the one chosen, alone
    ciphers: tuple[int, ...] = (AES_256_GCM, CHACHA20_POLY1305)

    def __post_init__(self) -> None:
        for kind, value in self._ints():
            low, high = _INT_BOUNDS[kind]
            if not low <= value <= high:
                raise ValueError(f"transport parameter {kind:#x} = {value} outside [{low}, {high}]")
        if not self.ciphers or any(c not in CIPHER_NAMES for c in self.ciphers):
            raise ValueError(f"unknown transport ciphers {self.ciphers}")

    def _ints(self) -> list[tuple[int, int]]:
        return [
            (T_VERSION, self.version),
            (T_STREAM_WINDOW, self.stream_window),
            (T_CONNECTION_WINDOW, self.connection_window),
            (T_MAX_STREAMS, self.max_streams),
            (T_MAX_UDP_FLOWS, self.max_udp_flows),
            (T_MAX_DATAGRAM, self.max_datagram),
        ]

    @property
    def cipher(self) -> int:
        """The first (for a response: the chosen) cipher."""
        return self.ciphers[0]


def encode_params(params: TransportParams, chosen: int | None = None) -> bytes:
    """The TLVs of `params`: with `chosen` (a response), the cipher chosen instead of the list."""
    out = bytearray()
    for kind, value in params._ints():
        raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
        out += bytes((kind, len(raw))) + raw
    if chosen is None:
        out += bytes((T_CIPHERS, len(params.ciphers))) + bytes(params.ciphers)
    else:
        out += bytes((T_CIPHER, 1, chosen))
    return bytes(out)


def decode_params(data: bytes, response: bool) -> TransportParams | None:
    """The parameters in `data`; None if malformed. `response`: a `cipher` is expected (the
    choice), else a `ciphers` list (the offer); the other one counts as an unknown TLV."""
    if len(data) > MAX_PARAMS_SIZE:
        return None
    fields: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            return None
        kind, length = data[at], data[at + 1]
        value = data[at + 2 : at + 2 + length]
        if len(value) != length or kind in fields:
            return None
        fields[kind] = value
        at += 2 + length
    values: dict[int, int] = {}
    for kind, (low, high) in _INT_BOUNDS.items():
        raw = fields.get(kind)
        if raw is None:
            continue
        if not 1 <= len(raw) <= 8:
            return None
        number = int.from_bytes(raw, "big")
        if not low <= number <= high:
            return None
        values[kind] = number
    if T_VERSION not in values:
        return None
    if response:
        chosen = fields.get(T_CIPHER, bytes((CHACHA20_POLY1305,)))
        if len(chosen) != 1 or chosen[0] not in CIPHER_NAMES:
            return None
        ciphers: tuple[int, ...] = (chosen[0],)
    else:
        # Ciphers this code does not know are skipped: a newer peer may offer more.
        offered = fields.get(T_CIPHERS, bytes((CHACHA20_POLY1305,)))
        ciphers = tuple(dict.fromkeys(c for c in offered if c in CIPHER_NAMES))
        if not ciphers:
            return None  # nothing we share: no transport data could flow
    return TransportParams(
        version=values[T_VERSION],
        stream_window=values.get(T_STREAM_WINDOW, DEFAULT_STREAM_WINDOW),
        connection_window=values.get(T_CONNECTION_WINDOW, DEFAULT_CONNECTION_WINDOW),
        max_streams=values.get(T_MAX_STREAMS, DEFAULT_MAX_STREAMS),
        max_udp_flows=values.get(T_MAX_UDP_FLOWS, DEFAULT_UDP_FLOWS),
        max_datagram=values.get(T_MAX_DATAGRAM, MAX_DATAGRAM),
        ciphers=ciphers,
    )


def choose_cipher(offered: tuple[int, ...], ours: tuple[int, ...]) -> int | None:
    """The responder's choice: the initiator's most preferred cipher that we support too."""
    for cipher in offered:
        if cipher in ours:
            return cipher
    return None
