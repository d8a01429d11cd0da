"""The send buffer's chunks: reads return exactly the bytes written, whether they fall in one
chunk (a view, uncopied), span several, go forward from the last read, jump back (a
retransmission) or follow the compaction of dropped chunks."""

from __future__ import annotations

import random

import pytest

from tunnel.channel.stream import JOIN_MAX, ChunkBuffer, SendStream


@pytest.mark.parametrize("seed", range(5))
def test_reads_match_what_was_written(seed: int) -> None:
    rng = random.Random(seed)
    buffer = ChunkBuffer(1000)
    written = bytearray()  # bytes from offset 1000 on
    dropped = 1000
    for _ in range(3000):
        action = rng.random()
        if action < 0.3:
            data = rng.randbytes(rng.choice((1, 7, 100, 1500, 4000)))
            buffer.append(data)
            written += data
        elif action < 0.4 and buffer.end > dropped:
            dropped = rng.randrange(dropped, buffer.end + 1)
            buffer.drop_below(dropped)
        elif buffer.end > dropped:
            # mostly forward, like sending; sometimes anywhere live, like a retransmission
            start = rng.randrange(dropped, buffer.end)
            length = rng.randrange(1, min(3000, buffer.end - start) + 1)
            got = buffer.read(start, length)
            assert bytes(got) == bytes(written[start - 1000 : start - 1000 + length])
    assert buffer.end == 1000 + len(written)


def test_sequential_packet_sized_reads_across_a_compaction() -> None:
    buffer = ChunkBuffer()
    data = random.Random(9).randbytes(300 * 1000)
    for i in range(0, len(data), 1000):
        buffer.append(data[i : i + 1000])  # 300 chunks: the front is compacted as it drops
    offset = 0
    while offset < len(data):
        length = min(1400, len(data) - offset)
        assert bytes(buffer.read(offset, length)) == data[offset : offset + length]
        offset += length
        buffer.drop_below(offset - 5000 if offset > 5000 else 0)
    assert isinstance(buffer.read(len(data) - 10, 5), memoryview)  # within one chunk: a view


def test_a_long_frame_ends_where_its_chunk_ends_and_a_short_one_joins() -> None:
    """A frame of 65,000-byte datagrams that would cross from one read area into the next is cut
    at the area's end, new or resent, so its data stays a view (a join copied up to 64 KiB); a
    frame at MTU 1,500 still joins small writes into one."""
    areas = [random.Random(i).randbytes(256 * 1024) for i in range(2)]
    send = SendStream(1 << 22, 1 << 30)
    for area in areas:
        assert send.write(memoryview(area), True) == len(area)
    sent = b""
    sizes = []
    while len(sent) < len(areas[0]) + 10_000:
        offset, data, _, _ = send.next_frame(64_900, 1 << 30)
        assert offset == len(sent) and isinstance(data, memoryview)
        sent += bytes(data)
        sizes.append(len(data))
    assert sizes[:5] == [64_900] * 4 + [256 * 1024 - 4 * 64_900]  # the fifth ends the area
    assert sent == (areas[0] + areas[1])[: len(sent)]
    send.on_data_lost(200_000, 64_900, False)  # a resent frame is cut at the same end
    offset, data, _, _ = send.next_frame(64_900, 1 << 30)
    assert (offset, len(data)) == (200_000, 256 * 1024 - 200_000)
    assert bytes(data) == areas[0][200_000:]

    small = SendStream(1 << 20, 1 << 30)
    for i in range(20):
        small.write(bytes([i]) * 100)
    offset, data, _, _ = small.next_frame(JOIN_MAX, 1 << 30)
    assert (offset, len(data)) == (0, 2000)  # twenty writes, one frame
