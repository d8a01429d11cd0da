"""The two halves of a reliable stream and the auto-tuned receive window (RFC 9000 §2-4).

`SendStream` holds what the application wrote until the peer acknowledges it: a bytearray from the
lowest unacknowledged offset, a range set of bytes acknowledged above that, and a range set of
bytes to retransmit. Lost frames re-queue exactly their own range (per-frame retransmission), so a
loss never resends more than was lost. The application's writes are bounded by `buffer_limit`
(more while the peer's credit is larger) and by a `SendBudget` shared by all the streams of a
channel: that is the backpressure the forwarder sees.

`ReceiveStream` reassembles by offset: in-order bytes go straight into a queue of chunks the
application reads from (small ones coalesced); early segments wait in a `Reassembly`, which holds
each byte once however the segments overlap. Everything it buffers lies below the credit it gave
the peer (`max_data`), so a reader that stops reading bounds the memory the sender can make it use;
and the early segments it holds are counted against a limit per stream and a `SegmentBudget` per
channel (both in proportion to the window), so tiny segments cannot multiply that memory either.

`ReceiveWindow` auto-tunes a credit like quic-go: credit is renewed each time a quarter of the
window was consumed, and when renewals come less than four RTTs apart the window doubles (up to a
maximum). Four, not quic-go's two, because loss holes stall reading for RTTs at a time and would
otherwise keep a lossy long fat path window-limited. The window so settles near 16x what the
reader drains per RTT, while an idle or slow stream keeps its initial window.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Final

from tunnel.channel.constants import (
    CHANNEL_WRITABLE_AT,
    COALESCED_CHUNK,
    MAX_CHANNEL_SEND_BUFFER,
    MAX_SEND_BUFFER,
    MIN_HELD_SEGMENTS,
    SMALL_CHUNK,
    WINDOW_PER_HELD_SEGMENT,
)
from tunnel.channel.rangeset import RangeSet
from tunnel.channel.reassembly import Reassembly, compact


class FlowControlError(Exception):
    """The peer sent beyond the credit we gave it (RFC 9000 FLOW_CONTROL_ERROR)."""


class FinalSizeError(Exception):
    """The peer changed a stream's final size or sent past it (RFC 9000 FINAL_SIZE_ERROR)."""


class ReceiveWindow:
    """Credit we give the peer, as an absolute offset, grown by auto-tuning."""

    __slots__ = ("last_update", "max_data", "max_window", "window")

    def __init__(self, window: int, max_window: int) -> None:
        self.window = window
        self.max_window = max(window, max_window)
        self.max_data = window
        self.last_update: float | None = None

    def needs_update(self, consumed: int) -> bool:
        # update once a quarter of the window is used: credit arrives well before the sender
        # runs dry, and the update rate is what tells auto-tuning how fast the window drains
        return self.max_data - consumed < self.window - self.window // 4

    def update(self, consumed: int, now: float, srtt: float) -> int:
        if self.last_update is not None and now - self.last_update < 4 * srtt:
            self.window = min(self.window * 2, self.max_window)
        self.last_update = now
        self.max_data = max(self.max_data, consumed + self.window)
        return self.max_data


def held_segment_limit(window: int) -> int:
    """Out-of-order segments a receive window of `window` bytes may hold."""
    return max(MIN_HELD_SEGMENTS, window // WINDOW_PER_HELD_SEGMENT)


class SegmentBudget:
    """Out-of-order segments held by all the streams of one channel, bounded by its window."""

    __slots__ = ("held", "window")

    def __init__(self, window: ReceiveWindow) -> None:
        self.window = window
        self.held = 0

    @property
    def limit(self) -> int:
        return held_segment_limit(self.window.window)


class SendBudget:
    """Unacknowledged bytes the send halves of all the streams of one channel hold together, and
    their bound: each stream's own bound follows its peer's credit, and a channel of many bulk
    streams would otherwise hold the sum of them."""

    __slots__ = ("buffered", "limit")

    def __init__(self, limit: int = MAX_CHANNEL_SEND_BUFFER) -> None:
        self.limit = limit
        self.buffered = 0

    def space(self) -> int:
        return max(0, self.limit - self.buffered)

    def roomy(self) -> bool:
        """Enough is free to wake the streams it held back (CHANNEL_WRITABLE_AT, or a quarter
        of a smaller bound)."""
        return self.space() >= min(CHANNEL_WRITABLE_AT, self.limit // 4)


_EMPTY: Final = memoryview(b"")
# The most bytes a read joins from several chunks: a frame's data at MTU 1,500 (small writes are
# joined into one frame; that copy costs less than a frame per write).
JOIN_MAX: Final = 4096


class ChunkBuffer:
    """Stream bytes from `start` to `end`, kept as the chunks the application wrote. Appending
    and dropping the acknowledged front are O(1); one bytearray would memmove the whole buffer
    (megabytes on a long fat path) for every ACK, which cost ~20 us a packet.

    A read within one chunk is a memoryview of it, not a copy (the copy was 1,400 bytes and a
    malloc for every full packet), and a frame longer than `JOIN_MAX` ends where its chunk ends
    (`unjoined`). Reads go forward, so the chunk of the last read, or the one after it, is tried
    before a binary search."""

    __slots__ = ("_chunks", "_cursor", "_head", "_starts", "end")

    def __init__(self, offset: int = 0) -> None:
        self._chunks: list[memoryview] = []
        self._starts: list[int] = []
        self._head = 0  # chunks before this index were dropped
        self._cursor = 0  # the chunk of the last read
        self.end = offset

    def append(self, data: bytes | memoryview) -> None:
        self._chunks.append(memoryview(data))
        self._starts.append(self.end)
        self.end += len(data)

    def _chunk_at(self, offset: int) -> int:
        chunks, starts = self._chunks, self._starts
        i = self._cursor
        if self._head <= i < len(chunks) and starts[i] <= offset:
            if offset < starts[i] + len(chunks[i]):
                return i
            i += 1
            if i < len(chunks) and offset < starts[i] + len(chunks[i]):
                self._cursor = i
                return i
        i = bisect_right(starts, offset, self._head) - 1
        self._cursor = i
        return i

    def unjoined(self, offset: int, length: int) -> int:
        """`length`, or what is left of the chunk at `offset` where a read of `length` bytes
        would join chunks into more than `JOIN_MAX` bytes. A frame cut there leaves the rest of
        the packet to a frame from the next chunk: the join was a copy of up to 64 KiB (a frame
        at 65,000-byte datagrams crosses from one read area into the next about once in four)."""
        if length <= JOIN_MAX:
            return length
        i = self._chunk_at(offset)
        return min(length, self._starts[i] + len(self._chunks[i]) - offset)

    def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes `[offset, offset + length)`; the range must lie within the buffer."""
        chunks, starts = self._chunks, self._starts
        i = self._chunk_at(offset)
        chunk = chunks[i]
        relative = offset - starts[i]
        if relative + length <= len(chunk):
            return chunk[relative : relative + length]
        parts = [chunk[relative:]]
        remaining = length - len(parts[0])
        while remaining > 0:
            i += 1
            piece = chunks[i][:remaining]
            parts.append(piece)
            remaining -= len(piece)
        return b"".join(parts)

    def drop_below(self, offset: int) -> None:
        """Forget every chunk that ends at or below `offset`."""
        chunks, starts = self._chunks, self._starts
        head = self._head
        while head < len(chunks) and starts[head] + len(chunks[head]) <= offset:
            chunks[head] = _EMPTY
            head += 1
        if head > 64 and head * 2 > len(chunks):
            del chunks[:head]
            del starts[:head]
            self._cursor = max(0, self._cursor - head)
            head = 0
        self._head = head

    def clear(self, offset: int) -> None:
        self._chunks.clear()
        self._starts.clear()
        self._head = self._cursor = 0
        self.end = offset


class SendStream:
    """Sending half: buffered, acknowledged and to-be-retransmitted bytes of one stream."""

    __slots__ = (
        "_acked",
        "_buf",
        "_buf_start",
        "_retransmit",
        "budget",
        "buffer_limit",
        "fin_acked",
        "fin_requested",
        "fin_sent",
        "max_data",
        "next_offset",
        "reset_acked",
        "reset_code",
        "reset_sent",
        "retransmitted_bytes",
        "want_writable",
    )

    def __init__(self, buffer_limit: int, max_data: int,
                 budget: SendBudget | None = None) -> None:
        self.budget = budget if budget is not None else SendBudget()  # the channel's, shared
        self._buf = ChunkBuffer()
        self._buf_start = 0  # everything below this offset is acknowledged
        self._acked = RangeSet()  # acknowledged ranges above _buf_start
        self._retransmit = RangeSet()  # lost ranges waiting to be sent again
        self.buffer_limit = buffer_limit
        self.max_data = max_data  # the peer's credit for this stream (absolute offset)
        self.next_offset = 0  # first byte never sent
        self.fin_requested = False
        self.fin_sent = False  # a FIN is in flight or acknowledged
        self.fin_acked = False
        self.reset_code: int | None = None
        self.reset_sent = False
        self.reset_acked = False
        self.want_writable = False  # the application was refused space; tell it when there is
        self.retransmitted_bytes = 0

    @property
    def write_end(self) -> int:
        return self._buf.end

    @property
    def buffered(self) -> int:
        return self._buf.end - self._buf_start

    def writable_space(self) -> int:
        if self.fin_requested or self.reset_code is not None:
            return 0
        return min(self.own_space(), self.budget.space())

    def own_space(self) -> int:
        """What this stream's own bound leaves, the channel's aside."""
        # Buffer at least `buffer_limit`, and up to twice the credit the peer currently extends
        # past our oldest unacknowledged byte: a fast reader on a long fat path grows its window
        # and so our buffer (lost data holds the buffer's front for a few RTTs); a slow reader
        # keeps its window small, and with it what we hold for it.
        credit = self.max_data - self._buf_start
        limit = min(max(self.buffer_limit, 2 * credit), MAX_SEND_BUFFER)
        return max(0, limit - (self._buf.end - self._buf_start))

    def write(self, data: bytes | bytearray | memoryview, owned: bool = False) -> int:
        """Take up to the free space of `data`; how much was taken. `owned`: the caller hands
        the memory over and never writes to it again, so a view is kept without a copy."""
        accepted = min(len(data), self.writable_space())
        if accepted < len(data):
            self.want_writable = True
        if accepted:
            self.budget.buffered += accepted
            if accepted == len(data) and isinstance(data, bytes):
                self._buf.append(data)  # immutable: keep the caller's object, no copy
            elif owned:
                self._buf.append(memoryview(data)[:accepted])
            else:
                self._buf.append(bytes(data[:accepted]))
        return accepted

    def reset(self, code: int) -> None:
        self.reset_code = code
        self.budget.buffered -= self._buf.end - self._buf_start
        self._buf.clear(self.next_offset)
        self._retransmit = RangeSet()
        self._acked = RangeSet()
        self._buf_start = self.next_offset  # final size: what the peer may have seen

    @property
    def final_size(self) -> int:
        return self.next_offset

    def has_retransmit(self) -> bool:
        return bool(self._retransmit) or (self.fin_requested and not self.fin_sent)

    def has_new_data(self) -> bool:
        return self.next_offset < self.write_end and self.next_offset < self.max_data

    def wants_to_send(self, connection_credit: int) -> bool:
        if self.reset_code is not None:
            return False
        if self._retransmit:
            return True
        if self.fin_requested and not self.fin_sent and self.next_offset == self.write_end:
            return True
        return self.has_new_data() and connection_credit > 0

    def next_frame(
        self, max_payload: int, connection_credit: int
    ) -> tuple[int, bytes | memoryview, bool, int]:
        """Take the next frame's `(offset, data, fin, new_bytes)`; `new_bytes` spends connection
        credit. The caller checked `wants_to_send` first; at worst this returns empty data."""
        if self._retransmit:
            start, end = self._retransmit.first() or (0, 0)
            end = start + self._buf.unjoined(start, min(end - start, max_payload))
            self._retransmit.remove(start, end)
            data = self._buf.read(start, end - start) if end > start else b""
            self.retransmitted_bytes += len(data)
            fin = self.fin_requested and end == self.write_end and not self.fin_acked
            if fin:
                self.fin_sent = True
            return start, data, fin, 0
        offset = self.next_offset
        # two-argument min/max only: mypyc compiles those inline, longer ones are generic calls
        count = min(min(self.write_end, self.max_data) - offset,
                    min(connection_credit, max_payload))
        count = self._buf.unjoined(offset, count) if count > 0 else 0
        data = self._buf.read(offset, count) if count > 0 else b""
        self.next_offset = offset + count
        fin = self.fin_requested and self.next_offset == self.write_end and not self.fin_sent
        if fin:
            self.fin_sent = True
        return offset, data, fin, count

    def on_data_acked(self, offset: int, length: int, fin: bool) -> bool:
        """Record an acknowledged frame; return True when buffer space was freed."""
        if fin:
            self.fin_acked = True
        end = offset + length
        if end <= self._buf_start or self.reset_code is not None:
            return False
        if offset == self._buf_start and not self._acked:  # in order: the common case
            self.budget.buffered -= length
            self._buf_start = end
            self._buf.drop_below(end)
            if self._retransmit:
                self._retransmit.remove(offset, end)
            return True
        start = max(offset, self._buf_start)
        self._acked.add(start, end)
        if self._retransmit:
            self._retransmit.remove(start, end)
        first = self._acked.first()
        if first is not None and first[0] == self._buf_start:
            self._acked.pop_first()
            self.budget.buffered -= first[1] - self._buf_start
            self._buf_start = first[1]
            self._buf.drop_below(first[1])
            return True
        return False

    def on_data_lost(self, offset: int, length: int, fin: bool) -> None:
        if self.reset_code is not None:
            return
        if fin and not self.fin_acked:
            self.fin_sent = False
        start = max(offset, self._buf_start)
        end = offset + length
        if start >= end:
            return
        self._retransmit.add(start, end)
        for lo, hi in self._acked:
            if lo < end and hi > start:
                self._retransmit.remove(lo, hi)

    @property
    def done(self) -> bool:
        if self.reset_code is not None:
            return self.reset_acked
        return self.fin_acked and self._buf_start == self._buf.end


class ReceiveStream:
    """Receiving half: reassembly by offset, bounded by the credit we advertised."""

    __slots__ = (
        "_pending",
        "_ready",
        "_ready_size",
        "eof_delivered",
        "final_size",
        "highest",
        "read_offset",
        "readable_signalled",
        "reset_code",
        "stopped",
        "budget",
        "window",
    )

    def __init__(self, window: ReceiveWindow, budget: SegmentBudget | None = None) -> None:
        # in-order chunks from read_offset on; a large one may be a view of its packet
        self._ready: deque[bytes | memoryview] = deque()
        self._ready_size = 0
        self._pending = Reassembly()  # early segments
        # the channel's count of early segments over all its streams (a stream alone: its own)
        self.budget = budget if budget is not None else SegmentBudget(window)
        self.read_offset = 0
        self.highest = 0  # highest offset received: what counts against connection credit
        self.final_size: int | None = None
        self.reset_code: int | None = None
        self.stopped = False  # the application asked the peer to stop; data is discarded
        self.eof_delivered = False
        self.readable_signalled = False
        self.window = window

    @property
    def contiguous_end(self) -> int:
        return self.read_offset + self._ready_size

    @property
    def buffered(self) -> int:
        return self._ready_size + self._pending.size

    @property
    def held_segments(self) -> int:
        return len(self._pending)

    def _append(self, data: bytes | memoryview) -> None:
        ready = self._ready
        if len(data) < SMALL_CHUNK and ready and len(ready[-1]) + len(data) <= COALESCED_CHUNK:
            # so each chunk is either large or at least ~3.5 KB together with the one before
            ready[-1] = b"".join((ready[-1], data))
        else:
            ready.append(compact(data))
        self._ready_size += len(data)

    def on_frame(self, offset: int, data: bytes | memoryview, fin: bool) -> tuple[int, bool]:
        """Take a STREAM frame; return `(bytes beyond the previous highest, has news)`.

        Raises FlowControlError / FinalSizeError before changing any state."""
        end = offset + len(data)
        if end > self.window.max_data:
            raise FlowControlError(f"stream data to {end} beyond credit {self.window.max_data}")
        final = self.final_size
        if final is not None and (end > final or (fin and end != final)):
            raise FinalSizeError("final size changed")
        if fin and end < self.highest:
            raise FinalSizeError("final size below received data")
        grown = max(0, end - self.highest)
        news = fin and self.final_size is None
        if self.reset_code is None and not self.stopped:
            contiguous = self.contiguous_end
            if offset <= contiguous < end:
                self._append(data[contiguous - offset :] if offset < contiguous else data)
                if self._pending:
                    self._drain_pending()
                news = True
            elif offset > contiguous:
                self._hold(offset, data)  # raises before changing anything
        else:
            news = False
        self.highest += grown
        if fin and self.final_size is None:
            self.final_size = end
        return grown, news

    def _hold(self, offset: int, data: bytes | memoryview) -> None:
        """Keep an early segment. Each held segment costs ~100 bytes of bookkeeping however small
        it is: bound their number per stream and per channel, or tiny segments would make the
        credit's bytes cost a hundred times more memory."""
        budget = self.budget
        pending = self._pending
        # held_segment_limit, inlined: this runs for every segment behind a loss
        room = max(MIN_HELD_SEGMENTS, self.window.window // WINDOW_PER_HELD_SEGMENT) - len(pending)
        channel_room = (
            max(MIN_HELD_SEGMENTS, budget.window.window // WINDOW_PER_HELD_SEGMENT) - budget.held
        )
        added = pending.insert(offset, data, room if room < channel_room else channel_room)
        if added is None:
            if channel_room < 1:
                raise FlowControlError(
                    f"more than {budget.limit} out-of-order segments on the channel"
                )
            limit = held_segment_limit(self.window.window)
            raise FlowControlError(f"more than {limit} out-of-order segments")
        budget.held += added

    def _drain_pending(self) -> None:
        chunks, count = self._pending.take_from(self.contiguous_end)
        self.budget.held -= count
        for chunk in chunks:
            self._append(chunk)

    def take(self, max_bytes: int | None) -> list[bytes | memoryview]:
        """Remove up to `max_bytes` in-order bytes (all when None) as the chunks they arrived in:
        a large chunk may be a view of its packet, and joining them is the caller's choice (the
        bridge hands them to one `writev` instead)."""
        ready = self._ready
        if max_bytes is None or max_bytes >= self._ready_size:
            chunks = list(ready)
            size = self._ready_size
            ready.clear()
        else:
            chunks = []
            size = want = max_bytes
            while want > 0:
                chunk = ready.popleft()
                if len(chunk) > want:
                    ready.appendleft(chunk[want:])
                    chunk = chunk[:want]
                chunks.append(chunk)
                want -= len(chunk)
        self._ready_size -= size
        self.read_offset += size
        if not ready:
            self.readable_signalled = False
            if self.final_size is not None and self.read_offset == self.final_size:
                self.eof_delivered = True
        return chunks

    def discard(self) -> int:
        """Drop everything buffered (stop or reset); return bytes newly counted as consumed."""
        self._ready.clear()
        self._ready_size = 0
        self.budget.held -= self._pending.clear()
        target = self.final_size if self.final_size is not None else self.highest
        freed = max(0, target - self.read_offset)
        self.read_offset += freed
        return freed

    def on_reset(self, code: int, final_size: int) -> int:
        """Apply RESET_STREAM; return bytes beyond the previous highest. Raises FinalSizeError."""
        if final_size < self.highest or (
            self.final_size is not None and final_size != self.final_size
        ):
            raise FinalSizeError("reset final size")
        if final_size > self.window.max_data:
            raise FlowControlError("reset final size beyond credit")
        grown = final_size - self.highest
        self.highest = final_size
        self.final_size = final_size
        self.reset_code = code
        return grown

    @property
    def done(self) -> bool:
        if self.reset_code is not None:
            return True
        if self.stopped:
            return self.final_size is not None
        return self.eof_delivered
