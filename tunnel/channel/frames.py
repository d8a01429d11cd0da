"""Channel packets and the frames inside them: dataclasses, encoders and one strict decoder.

A channel packet is the plaintext the secure session seals. Layout (after RFC 9000 §12.4, §19,
with one-byte frame types because the channel speaks only to itself):

| field          | encoding | meaning                                                     |
|----------------|----------|-------------------------------------------------------------|
| packet number  | varint   | strictly increasing per sender; never reused                |
| frames...      |          | one or more frames until the end of the packet              |

| type      | name            | body (all integers are QUIC varints, RFC 9000 §16)            |
|-----------|-----------------|---------------------------------------------------------------|
| 0x00      | PADDING         | none (runs of zeros; used to probe a larger packet size)      |
| 0x01      | PING            | none; elicits an ACK                                          |
| 0x02      | ACK             | largest, ack_delay (µs), extra range count, first range,      |
|           |                 | then (gap, length) pairs exactly as RFC 9000 §19.3.1          |
| 0x04      | RESET_STREAM    | stream id, error code, final size                             |
| 0x05      | STOP_SENDING    | stream id, error code                                         |
| 0x08/0x09 | STREAM (+FIN)   | stream id, offset, length, data                               |
| 0x10      | MAX_DATA        | connection credit (absolute byte offset)                      |
| 0x11      | MAX_STREAM_DATA | stream id, stream credit (absolute byte offset)               |
| 0x12      | MAX_STREAMS     | how many streams the peer may have opened in total            |
| 0x1c      | CLOSE           | error code, reason length, UTF-8 reason                       |
| 0x30      | DATAGRAM        | length, data (RFC 9221; never retransmitted)                  |

`decode_packet` never raises: truncated, over-long or unknown input returns None, and the caller
drops the whole packet before any frame is applied (all-or-nothing, so no state change).

The frame classes, like the events of `events.py` and `tunnel.session.events`, spell out their
`__init__`: the one `dataclasses` generates is interpreted Python even in the mypyc build, and
made a STREAM frame cost 0.5 us against 0.1 (issue 13). They are mutable only so that the
pure-Python build can run that `__init__`; nothing changes them after construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

VARINT_MAX: Final = (1 << 62) - 1

PADDING: Final = 0x00
PING: Final = 0x01
ACK: Final = 0x02
RESET_STREAM: Final = 0x04
STOP_SENDING: Final = 0x05
STREAM: Final = 0x08
STREAM_FIN: Final = 0x09
MAX_DATA: Final = 0x10
MAX_STREAM_DATA: Final = 0x11
MAX_STREAMS: Final = 0x12
CLOSE: Final = 0x1C
DATAGRAM: Final = 0x30

#: bytes; worst-case STREAM frame header: type + three 8-byte varints.
STREAM_HEADER_MAX: Final = 1 + 8 + 8 + 8

#: bytes; a decoded STREAM frame at least this long that is also at least half of its packet is
#: a memoryview of the packet, not a copy: at path-MTU packets the copy (and the page faults of
#: its fresh 64 KB allocation) was a third of the receiver's CPU. Only a frame that is most of its
#: packet may keep the packet alive, so a peer cannot pin a 64 KB packet with a one-byte frame.
VIEW_MIN: Final = 4096


class DecodeError(ValueError):
    """Remote input that does not parse. Raised only inside this module; callers see None."""


@dataclass(frozen=True, slots=True)
class PingFrame:
    pass


@dataclass(slots=True, init=False)
class PaddingFrame:
    length: int

    def __init__(self, length: int) -> None:
        self.length = length


@dataclass(slots=True, init=False)
class AckFrame:
    #: inclusive `(smallest, largest)` packet-number ranges, highest first
    ranges: tuple[tuple[int, int], ...]
    ack_delay_us: int

    def __init__(self, ranges: tuple[tuple[int, int], ...], ack_delay_us: int) -> None:
        self.ranges = ranges
        self.ack_delay_us = ack_delay_us


@dataclass(slots=True, init=False)
class ResetStreamFrame:
    stream_id: int
    error_code: int
    final_size: int

    def __init__(self, stream_id: int, error_code: int, final_size: int) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.final_size = final_size


@dataclass(slots=True, init=False)
class StopSendingFrame:
    stream_id: int
    error_code: int

    def __init__(self, stream_id: int, error_code: int) -> None:
        self.stream_id = stream_id
        self.error_code = error_code


@dataclass(slots=True, init=False)
class StreamFrame:
    stream_id: int
    offset: int
    data: bytes | memoryview  # a view of the packet when it is most of the packet (see VIEW_MIN)
    fin: bool

    def __init__(self, stream_id: int, offset: int, data: bytes | memoryview, fin: bool) -> None:
        self.stream_id = stream_id
        self.offset = offset
        self.data = data
        self.fin = fin


@dataclass(slots=True, init=False)
class MaxDataFrame:
    maximum: int

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum


@dataclass(slots=True, init=False)
class MaxStreamDataFrame:
    stream_id: int
    maximum: int

    def __init__(self, stream_id: int, maximum: int) -> None:
        self.stream_id = stream_id
        self.maximum = maximum


@dataclass(slots=True, init=False)
class MaxStreamsFrame:
    maximum: int

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum


@dataclass(slots=True, init=False)
class CloseFrame:
    error_code: int
    reason: str

    def __init__(self, error_code: int, reason: str) -> None:
        self.error_code = error_code
        self.reason = reason


@dataclass(slots=True, init=False)
class DatagramFrame:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


Frame = (
    PingFrame
    | PaddingFrame
    | AckFrame
    | ResetStreamFrame
    | StopSendingFrame
    | StreamFrame
    | MaxDataFrame
    | MaxStreamDataFrame
    | MaxStreamsFrame
    | CloseFrame
    | DatagramFrame
)


# --- varints (RFC 9000 §16) -----------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if value < 0x40:
        if value < 0:
            raise ValueError("varint must not be negative")
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise ValueError("varint too large")


def varint_size(value: int) -> int:
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    return 8


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    # Byte arithmetic, not `int.from_bytes(buf[pos:end], "big")`: compiled, that is a slice and
    # a generic method call, 170 ns against 40 for an 8-byte stream offset in every packet.
    if pos >= len(buf):
        raise DecodeError("truncated varint")
    first = buf[pos]
    if first < 0x40:
        return first, pos + 1
    end = pos + (1 << (first >> 6))
    if end > len(buf):
        raise DecodeError("truncated varint")
    value = first & 0x3F
    for index in range(pos + 1, end):
        value = (value << 8) | buf[index]
    return value, end


def _bytes(buf: bytes, pos: int, length: int) -> tuple[bytes, int]:
    end = pos + length
    if end > len(buf):
        raise DecodeError("truncated body")
    return buf[pos:end], end


# --- encoders (the send path builds bytes directly; no dataclass per frame) -----------------


def encode_stream_header(stream_id: int, offset: int, length: int, fin: bool) -> bytes:
    """Type, stream id, offset and length, each varint in its shortest form.

    Every data packet has one. The usual shapes (a stream id below 64, a length below 16 KB, an
    offset of 4 or 8 bytes) are built as whole integers and converted once or twice: compiled,
    three `encode_varint` calls and a join were 8.7 % of a bulk sender's CPU at MTU 1,500."""
    kind = 0x09 if fin else 0x08
    if 0 <= stream_id < 0x40 and 0x40 <= length < 0x4000 and offset >= 0x4000:
        head = (kind << 8 | stream_id) << 48  # the first 2 of 8 bytes
        if offset < 0x40000000:  # 1 + 1 + 4 + 2 bytes: one 8-byte integer (below 2**60)
            return (head | (offset | 0x80000000) << 16 | length | 0x4000).to_bytes(8, "big")
        if offset <= VARINT_MAX:  # 1 + 1 + 8 + 2 bytes: the offset spans both integers
            first = head | 0xC00000000000 | offset >> 16
            last = (offset & 0xFFFF) << 16 | length | 0x4000
            return first.to_bytes(8, "big") + last.to_bytes(4, "big")
    return b"".join(
        (bytes((kind,)), encode_varint(stream_id), encode_varint(offset), encode_varint(length))
    )


def encode_ack(ranges: list[tuple[int, int]], ack_delay_us: int) -> bytes:
    """`ranges` are inclusive `(smallest, largest)`, highest first, disjoint and non-adjacent."""
    smallest, largest = ranges[0]
    parts = [
        b"\x02",
        encode_varint(largest),
        encode_varint(ack_delay_us),
        encode_varint(len(ranges) - 1),
        encode_varint(largest - smallest),
    ]
    previous_smallest = smallest
    for lo, hi in ranges[1:]:
        parts.append(encode_varint(previous_smallest - hi - 2))
        parts.append(encode_varint(hi - lo))
        previous_smallest = lo
    return b"".join(parts)


def encode_frame(frame: Frame) -> bytes:
    """Encode any frame (used by tests, control frames and the fuzzers)."""
    v = encode_varint
    match frame:
        case PingFrame():
            return b"\x01"
        case PaddingFrame(length):
            return bytes(length)
        case AckFrame(ranges, delay):
            return encode_ack(list(ranges), delay)
        case ResetStreamFrame(sid, code, size):
            return b"\x04" + v(sid) + v(code) + v(size)
        case StopSendingFrame(sid, code):
            return b"\x05" + v(sid) + v(code)
        case StreamFrame(sid, offset, data, fin):
            return encode_stream_header(sid, offset, len(data), fin) + data
        case MaxDataFrame(maximum):
            return b"\x10" + v(maximum)
        case MaxStreamDataFrame(sid, maximum):
            return b"\x11" + v(sid) + v(maximum)
        case MaxStreamsFrame(maximum):
            return b"\x12" + v(maximum)
        case CloseFrame(code, reason):
            raw = reason.encode()
            return b"\x1c" + v(code) + v(len(raw)) + raw
        case DatagramFrame(data):
            return b"\x30" + v(len(data)) + data
    raise TypeError(f"not a frame: {frame!r}")


def encode_packet(packet_number: int, frames: list[Frame]) -> bytes:
    return encode_varint(packet_number) + b"".join(encode_frame(f) for f in frames)


# --- decoder --------------------------------------------------------------------------------


def _decode_ack(buf: bytes, pos: int) -> tuple[AckFrame, int]:
    largest, pos = _varint(buf, pos)
    delay, pos = _varint(buf, pos)
    count, pos = _varint(buf, pos)
    first, pos = _varint(buf, pos)
    smallest = largest - first
    if smallest < 0:
        raise DecodeError("ack range below zero")
    if count > len(buf):  # each range takes at least two bytes: cheap bound against huge counts
        raise DecodeError("ack range count")
    ranges = [(smallest, largest)]
    for _ in range(count):
        gap, pos = _varint(buf, pos)
        length, pos = _varint(buf, pos)
        hi = smallest - gap - 2
        lo = hi - length
        if lo < 0:
            raise DecodeError("ack range below zero")
        ranges.append((lo, hi))
        smallest = lo
    return AckFrame(tuple(ranges), delay), pos


def _decode_frames(buf: bytes, pos: int) -> list[Frame]:
    frames: list[Frame] = []
    end = len(buf)
    view: memoryview | None = None
    while pos < end:
        kind = buf[pos]
        pos += 1
        if kind & 0xFE == STREAM:  # STREAM or STREAM_FIN: the data path, varints inlined
            first = buf[pos] if pos < end else 0x100
            if first < 0x40:
                sid = first
                pos += 1
            else:
                sid, pos = _varint(buf, pos)
            offset, pos = _varint(buf, pos)
            first = buf[pos] if pos < end else 0x100
            if 0x40 <= first < 0x80 and pos + 2 <= end:  # 2-byte lengths: every full packet
                length = ((first & 0x3F) << 8) | buf[pos + 1]
                pos += 2
            else:
                length, pos = _varint(buf, pos)
            if offset + length > VARINT_MAX:
                raise DecodeError("stream beyond 2^62")
            stop = pos + length
            if stop > end:
                raise DecodeError("truncated body")
            if length >= VIEW_MIN and length * 2 >= end:
                if view is None:
                    view = memoryview(buf)
                data: bytes | memoryview = view[pos:stop]
            else:
                data = buf[pos:stop]
            frames.append(StreamFrame(sid, offset, data, kind == STREAM_FIN))
            pos = stop
        elif kind == ACK:
            ack, pos = _decode_ack(buf, pos)
            frames.append(ack)
        elif kind == PADDING:
            start = pos - 1
            while pos < end and buf[pos] == 0:
                pos += 1
            frames.append(PaddingFrame(pos - start))
        elif kind == PING:
            frames.append(PingFrame())
        elif kind == MAX_DATA:
            maximum, pos = _varint(buf, pos)
            frames.append(MaxDataFrame(maximum))
        elif kind == MAX_STREAM_DATA:
            sid, pos = _varint(buf, pos)
            maximum, pos = _varint(buf, pos)
            frames.append(MaxStreamDataFrame(sid, maximum))
        elif kind == MAX_STREAMS:
            maximum, pos = _varint(buf, pos)
            frames.append(MaxStreamsFrame(maximum))
        elif kind == RESET_STREAM:
            sid, pos = _varint(buf, pos)
            code, pos = _varint(buf, pos)
            size, pos = _varint(buf, pos)
            frames.append(ResetStreamFrame(sid, code, size))
        elif kind == STOP_SENDING:
            sid, pos = _varint(buf, pos)
            code, pos = _varint(buf, pos)
            frames.append(StopSendingFrame(sid, code))
        elif kind == DATAGRAM:
            length, pos = _varint(buf, pos)
            data, pos = _bytes(buf, pos, length)
            frames.append(DatagramFrame(data))
        elif kind == CLOSE:
            code, pos = _varint(buf, pos)
            length, pos = _varint(buf, pos)
            raw, pos = _bytes(buf, pos, length)
            frames.append(CloseFrame(code, raw.decode("utf-8", errors="replace")))
        else:
            raise DecodeError(f"unknown frame type 0x{kind:02x}")
    return frames


def decode_packet(data: bytes, start: int = 0) -> tuple[int, list[Frame]] | None:
    """Return `(packet_number, frames)` of the packet `data[start:]`, or None when anything in
    the packet is malformed."""
    try:
        packet_number, pos = _varint(data, start)
        frames = _decode_frames(data, pos)
    except DecodeError:
        return None
    if not frames:
        return None
    return packet_number, frames
