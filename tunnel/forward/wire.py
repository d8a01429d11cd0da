"""The forwarding wire format: what a forwarded TCP stream or UDP datagram carries before its
payload (sans-IO codecs).

Forwarded traffic names the service it is for, because one node may expose several. A forwarded
TCP connection is one channel stream that starts with an *open header*; the bytes after it are the
connection's own:

| offset | size          | field                                   |
|--------|---------------|-----------------------------------------|
| 0      | 1             | version = `FORWARD_VERSION` (1)         |
| 1      | 1             | n: length of the name, 1..63            |
| 2      | n             | service name (UTF-8)                    |
| 2 + n  | ...           | the forwarded TCP connection's bytes    |

A forwarded UDP datagram is one channel datagram: the same header, then a flow id (one per local
source address, so replies find their way back to the right local socket), then the payload:

| offset | size          | field                                   |
|--------|---------------|-----------------------------------------|
| 0      | 1             | version = `FORWARD_VERSION` (1)         |
| 1      | 1             | n: length of the name, 1..63            |
| 2      | n             | service name (UTF-8)                    |
| 2 + n  | 4             | flow id (big-endian)                    |
| 6 + n  | ...           | the UDP payload                         |

A refused or aborted stream is reset with one of the `RESET_*` codes (the channel's RESET_STREAM
and STOP_SENDING error code) so both sides can log why.
"""

from __future__ import annotations

import struct
from typing import Final

FORWARD_VERSION: Final = 1
MAX_NAME_LENGTH: Final = 63  # bytes; names are DNS-label-like

RESET_CONNECTION_REFUSED: Final = 1
RESET_UNKNOWN_SERVICE: Final = 2
RESET_NOT_ALLOWED: Final = 3
RESET_ABORTED: Final = 4
RESET_TOO_MANY_CONNECTIONS: Final = 5
RESET_REASONS: Final = {
    RESET_CONNECTION_REFUSED: "the service refused the connection (is it running?)",
    RESET_UNKNOWN_SERVICE: "the peer exposes no service by that name",
    RESET_NOT_ALLOWED: "this node is not on the service's allow list",
    RESET_ABORTED: "the connection was aborted",
    RESET_TOO_MANY_CONNECTIONS: "the peer holds as many connections as its descriptor limit "
    "allows; try again when some close",
}

_FLOW: Final = struct.Struct("!I")


class ForwardDecodeError(ValueError):
    """A forwarding header from the peer is malformed."""


def reset_reason(code: int) -> str:
    return RESET_REASONS.get(code, f"reset with code {code}")


def encode_open(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) <= MAX_NAME_LENGTH:
        raise ValueError(f"service name must be 1-{MAX_NAME_LENGTH} bytes")
    return bytes((FORWARD_VERSION, len(raw))) + raw


def decode_open(buffer: bytes) -> tuple[str, int] | None:
    """(name, header length) once the whole header has arrived; None while it is incomplete.

    Raises ForwardDecodeError for a header that can never become valid.
    """
    if len(buffer) < 2:
        return None
    if buffer[0] != FORWARD_VERSION or not 0 < buffer[1] <= MAX_NAME_LENGTH:
        raise ForwardDecodeError("bad stream open header")
    end = 2 + buffer[1]
    if len(buffer) < end:
        return None
    try:
        return buffer[2:end].decode(), end
    except UnicodeDecodeError:
        raise ForwardDecodeError("service name is not UTF-8") from None


def encode_udp(name: str, flow: int, payload: bytes) -> bytes:
    return encode_open(name) + _FLOW.pack(flow) + payload


def decode_udp(datagram: bytes) -> tuple[str, int, bytes] | None:
    """(name, flow id, payload), or None for a malformed datagram (dropped by the caller)."""
    try:
        header = decode_open(datagram)
    except ForwardDecodeError:
        return None
    if header is None:
        return None
    name, end = header
    if len(datagram) < end + _FLOW.size:
        return None
    (flow,) = _FLOW.unpack_from(datagram, end)
    return name, flow, datagram[end + _FLOW.size :]
