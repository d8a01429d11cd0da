"""Early stream segments waiting for the bytes before them, each byte held once (RFC 9000 §2.2).

A peer may send a stream's bytes in any segmentation, order and repetition: retransmissions
re-chunk after a packet-size change, and a hostile peer shifts segments by one byte so that every
one overlaps the last. Keeping each segment as it came let 3 streams whose highest offset was
21 KB hold 66 MB (issue 12). So `Reassembly` keeps disjoint pieces sorted by offset: a segment is
trimmed to the bytes no piece holds yet and replaces the pieces it covers whole. The bytes held
are then a subset of `[read offset, highest offset)`, which is what the stream and channel credit
already count, and one segment adds at most one piece: the caller bounds the number of pieces
(every piece costs ~100 bytes of bookkeeping however small it is) by passing how many more it may
hold. A small segment that continues the piece before it is copied onto that piece (up to
`COALESCED_CHUNK`), so the small writes of an interactive stream waiting behind one lost packet
count as one piece, not as one each. Arrival in ascending order, the common case under loss,
appends in O(1); the rest bisects.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import cast

from tunnel.channel.constants import COALESCED_CHUNK, SMALL_CHUNK


def compact(part: bytes | memoryview) -> bytes | memoryview:
    """`part` as it may be kept: a view of a packet (`frames.VIEW_MIN`) that holds less than half
    of that packet becomes a copy, so that a few bytes of a trimmed retransmission cannot keep a
    64 KB packet alive; what is kept stays within twice the bytes it counts."""
    if isinstance(part, memoryview) and 2 * len(part) < len(cast(bytes, part.obj)):
        return bytes(part)
    return part


class Reassembly:
    """Disjoint `(offset, bytes)` pieces sorted by offset; `size` is the bytes they hold."""

    __slots__ = ("_pieces", "_starts", "size")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._pieces: list[bytes | memoryview] = []
        self.size = 0

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def insert(self, offset: int, data: bytes | memoryview, room: int) -> int | None:
        """Hold the bytes of `data` (at `offset`) that no piece holds yet; return the change in
        the number of pieces (1 at most). None, with nothing changed, when that change would
        exceed `room`."""
        starts, pieces = self._starts, self._pieces
        end = offset + len(data)
        if not starts or offset >= starts[-1] + len(pieces[-1]):
            if self._extends(len(starts) - 1, offset, data):
                return 0
            if room < 1:
                return None
            starts.append(offset)
            pieces.append(compact(data))
            self.size += len(data)
            return 1
        # the piece holding `offset`, if one does, covers the front of the new data
        before = bisect_right(starts, offset) - 1
        if before >= 0:
            held_to = starts[before] + len(pieces[before])
            if held_to >= end:
                return 0
            if held_to > offset:
                data = data[held_to - offset :]
                offset = held_to
        # pieces [lo, hi) start inside the new data; the last may reach past its end
        lo = before + 1
        hi = bisect_left(starts, end, lo)
        if hi > lo and starts[hi - 1] + len(pieces[hi - 1]) > end:
            hi -= 1
            data = data[: starts[hi] - offset]
            if not data:
                return 0
        if lo == hi and self._extends(before, offset, data):
            return 0
        change = 1 - (hi - lo)
        if change > room:
            return None
        self.size += len(data) - sum(len(piece) for piece in pieces[lo:hi])
        starts[lo:hi] = [offset]
        pieces[lo:hi] = [compact(data)]
        return change

    def _extends(self, index: int, offset: int, data: bytes | memoryview) -> bool:
        """Copy a small `data` onto piece `index` if it continues that piece and the result stays
        small; the copy is then at most `COALESCED_CHUNK` bytes."""
        if index < 0 or len(data) >= SMALL_CHUNK:
            return False
        piece = self._pieces[index]
        if self._starts[index] + len(piece) != offset or len(piece) + len(data) > COALESCED_CHUNK:
            return False
        self._pieces[index] = b"".join((piece, data))  # either may be a view of its packet
        self.size += len(data)
        return True

    def take_from(self, offset: int) -> tuple[list[bytes | memoryview], int]:
        """Remove every piece that starts at or below `offset` (the stream's contiguous end);
        return the bytes they add past it, in order, and how many pieces went."""
        starts, pieces = self._starts, self._pieces
        out: list[bytes | memoryview] = []
        count = 0
        removed = 0
        while count < len(starts) and starts[count] <= offset:
            start, piece = starts[count], pieces[count]
            removed += len(piece)
            end = start + len(piece)
            if end > offset:
                out.append(piece[offset - start :] if start < offset else piece)
                offset = end
            count += 1
        if count:
            del starts[:count]
            del pieces[:count]
            self.size -= removed
        return out, count

    def clear(self) -> int:
        """Drop every piece; return how many there were."""
        count = len(self._starts)
        self._starts.clear()
        self._pieces.clear()
        self.size = 0
        return count
