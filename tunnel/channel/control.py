"""Control frames waiting to be sent, and what a sent packet must redo if it is lost.

Flow-control credits (MAX_DATA, MAX_STREAM_DATA), stream aborts (RESET_STREAM, STOP_SENDING) and
stream limits (MAX_STREAMS) are state, not messages: if the packet carrying one is lost, the
current value is queued again (RFC 9000 §13.3), never the stale bytes. Each sent packet records
its frames as `SentFrame` tuples `(kind, stream id, a, b, c)` with the kinds below.
"""

from __future__ import annotations

from typing import Final

from tunnel.channel.recovery import SentFrame
from tunnel.channel.stream import ReceiveWindow
from tunnel.channel.streamtable import StreamTable

from . import frames as fr

# kinds of SentFrame: what a sent packet must redo if lost, or settle if acknowledged
F_STREAM: Final = 0
F_MAX_DATA: Final = 1
F_MAX_STREAM_DATA: Final = 2
F_RESET: Final = 3
F_STOP: Final = 4
F_MAX_STREAMS: Final = 5
F_PING: Final = 6
F_ACK: Final = 7  # an ACK whose arrival lets us stop repeating the ranges it carried


class ControlFrames:
    __slots__ = ("max_data", "max_stream_data", "resets", "stops")

    def __init__(self) -> None:
        self.max_data = False  # the connection credit needs announcing
        self.max_stream_data: set[int] = set()  # streams whose credit needs announcing
        self.resets: set[int] = set()  # streams whose RESET_STREAM must be (re)sent
        self.stops: dict[int, int] = {}  # stream -> STOP_SENDING error code

    def pending(self, table: StreamTable) -> bool:
        return bool(
            self.max_data
            or self.max_stream_data
            or self.resets
            or self.stops
            or table.send_max_streams
        )

    def write(
        self,
        parts: list[bytes | memoryview],
        sent: list[SentFrame],
        space: int,
        now: float,
        table: StreamTable,
        connection: ReceiveWindow,
        consumed: int,
        srtt: float,
    ) -> int:
        """Append what fits of the pending frames; return the space left."""
        v = fr.encode_varint
        if space < 32:
            return space
        if self.max_data:
            self.max_data = False
            frame = b"\x10" + v(connection.update(consumed, now, srtt))
            parts.append(frame)
            sent.append((F_MAX_DATA, 0, 0, 0, 0))
            space -= len(frame)
        streams = table.streams
        while self.max_stream_data and space >= 20:
            sid = self.max_stream_data.pop()
            stream = streams.get(sid)
            if stream is None or stream.recv.final_size is not None:
                continue
            maximum = stream.recv.window.update(stream.recv.read_offset, now, srtt)
            frame = b"\x11" + v(sid) + v(maximum)
            parts.append(frame)
            sent.append((F_MAX_STREAM_DATA, sid, 0, 0, 0))
            space -= len(frame)
        while self.resets and space >= 28:
            sid = self.resets.pop()
            stream = streams.get(sid)
            if stream is None or stream.send.reset_code is None:
                continue
            frame = b"\x04" + v(sid) + v(stream.send.reset_code) + v(stream.send.final_size)
            parts.append(frame)
            sent.append((F_RESET, sid, 0, 0, 0))
            space -= len(frame)
        while self.stops and space >= 20:
            sid, code = self.stops.popitem()
            frame = b"\x05" + v(sid) + v(code)
            parts.append(frame)
            sent.append((F_STOP, sid, code, 0, 0))
            space -= len(frame)
        if table.send_max_streams and space >= 10:
            table.send_max_streams = False
            frame = b"\x12" + v(table.local_max_streams)
            parts.append(frame)
            sent.append((F_MAX_STREAMS, 0, 0, 0, 0))
            space -= len(frame)
        return space

    def on_lost(self, sent: SentFrame, table: StreamTable) -> None:
        """Queue again the current value of a lost control frame (not STREAM, ACK or PING)."""
        kind, sid, code = sent[0], sent[1], sent[2]
        stream = table.streams.get(sid)
        if kind == F_MAX_DATA:
            self.max_data = True
        elif kind == F_MAX_STREAM_DATA:
            if stream is not None and stream.recv.final_size is None:
                self.max_stream_data.add(sid)
        elif kind == F_RESET:
            if stream is not None and not stream.send.reset_acked:
                self.resets.add(sid)
        elif kind == F_STOP:
            if stream is not None and stream.recv.final_size is None:
                self.stops[sid] = code
        elif kind == F_MAX_STREAMS:
            table.send_max_streams = True
