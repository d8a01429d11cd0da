"""What travels inside a session's encrypted payloads, above the channel (sans-IO codecs).

Every transport payload starts with one byte saying what it carries:

| byte | payload                 | layout after the byte                                   |
|------|-------------------------|---------------------------------------------------------|
| 0x00 | channel packet          | the reliable channel's packet (`tunnel.channel.channel`)        |
| 0x01 | path ping               | tx id (8 B)                                             |
| 0x02 | path pong               | tx id (8 B)                                             |
| 0x03 | prediction request      | (empty) "my NAT randomizes ports; I opened sockets to   |
|      |                         | you: ping random ports of my address" (`tunnel.path.prediction`)|

Path pings test a candidate path (see `tunnel.path.manager`); they are encrypted and authenticated
like everything else, so an outsider cannot fake a working path.

Forwarded traffic names the service it is for, because one node may expose several:

- a stream starts with an *open header*: version (1 B) = 1, length of the name (1 B), the name
  (UTF-8); the bytes that follow are the forwarded TCP connection's;
- a forwarded UDP datagram is a channel datagram: version (1 B) = 1, length of the name (1 B), the
  name, flow id (4 B, big-endian; one per local source address), then the UDP payload.

A refused stream is reset with one of the `RESET_*` codes so both sides can log why.
"""

from __future__ import annotations

import struct

PAYLOAD_CHANNEL = 0x00
PAYLOAD_PING = 0x01
PAYLOAD_PONG = 0x02
PAYLOAD_PREDICTION = 0x03
TXID_SIZE = 8

FORWARD_VERSION = 1
MAX_NAME_LENGTH = 63  # bytes; names are DNS-label-like

RESET_CONNECTION_REFUSED = 1
RESET_UNKNOWN_SERVICE = 2
RESET_NOT_ALLOWED = 3
RESET_ABORTED = 4
RESET_REASONS = {
    RESET_CONNECTION_REFUSED: "the service refused the connection (is it running?)",
    RESET_UNKNOWN_SERVICE: "the peer exposes no service by that name",
    RESET_NOT_ALLOWED: "this node is not on the service's allow list",
    RESET_ABORTED: "the connection was aborted",
}

_FLOW = struct.Struct("!I")


class ForwardDecodeError(ValueError):
    """A forwarding header from the peer is malformed."""


def reset_reason(code: int) -> str:
    return RESET_REASONS.get(code, f"reset with code {code}")


def encode_ping(kind: int, txid: bytes) -> bytes:
    return bytes((kind,)) + txid


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
