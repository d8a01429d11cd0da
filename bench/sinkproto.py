"""The wire protocol between the load generator and the sink/echo server (pure, no I/O).

Every benchmark path forwards one TCP port to the same server, so every path is measured alike.
The first byte of a connection picks the mode:

| first byte | mode | then                                                                 |
|------------|------|----------------------------------------------------------------------|
| `S`        | sink | records of `u32 length` (big-endian) + `length` bytes; a zero length |
|            |      | ends the run. The server answers `u64` 0 at once (the connection is  |
|            |      | up end to end), then the payload bytes received so far after a read |
|            |      | that completes a record (at most every 50 ms) and at the end        |
| `E`        | echo | every byte is sent back until EOF                                    |

The sink does not rely on TCP half-close (some forwarders tear a connection down on the first
FIN), so its end marker is in-band. The running totals let the sender keep a bounded window of
unconfirmed bytes, so a slow tunnel is never stuffed with a minute of data to drain.
"""

from __future__ import annotations

import struct

MODE_SINK = b"S"
MODE_ECHO = b"E"
RECORD_HEADER = struct.Struct(">I")
TOTAL = struct.Struct(">Q")
END_RECORD = RECORD_HEADER.pack(0)


def record(payload_size: int) -> bytes:
    """One record of `payload_size` zero bytes, header included (reused for every send)."""
    return RECORD_HEADER.pack(payload_size) + bytes(payload_size)


class SinkCounter:
    """Counts payload bytes of a record stream fed in arbitrary pieces until the end record."""

    __slots__ = ("_header", "_remaining", "finished", "total")

    def __init__(self) -> None:
        self.total = 0
        self.finished = False
        self._remaining = 0
        self._header = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Consume `data`; how many records (the end record included) it completed.

        `finished` turns True at the end record; bytes after it are ignored.
        """
        view = memoryview(data)
        completed = 0
        pos = 0
        size = len(view)
        while pos < size and not self.finished:
            if self._remaining:
                take = min(self._remaining, size - pos)
                self._remaining -= take
                self.total += take
                pos += take
                completed += self._remaining == 0
                continue
            need = RECORD_HEADER.size - len(self._header)
            chunk = view[pos:pos + need]
            self._header += chunk
            pos += len(chunk)
            if len(self._header) == RECORD_HEADER.size:
                (length,) = RECORD_HEADER.unpack(self._header)
                self._header.clear()
                if length == 0:
                    self.finished = True
                    completed += 1
                self._remaining = length
        return completed


class AckReader:
    """Collects the sink's running totals from a byte stream fed in arbitrary pieces."""

    __slots__ = ("_partial", "acked")

    def __init__(self) -> None:
        self.acked = 0
        self._partial = bytearray()

    def feed(self, data: bytes) -> int:
        """Consume `data`; the latest complete total (0 before the first)."""
        self._partial += data
        whole = len(self._partial) - len(self._partial) % TOTAL.size
        if whole:
            (self.acked,) = TOTAL.unpack_from(self._partial, whole - TOTAL.size)
            del self._partial[:whole]
        return self.acked
