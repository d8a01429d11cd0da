"""The send buffer's chunks: reads return exactly the bytes written, whether they fall in one
chunk (a view, uncopied), span several, go forward from the last read, jump back (a
retransmission) or follow the compaction of dropped chunks."""

from __future__ import annotations

import random

import pytest

from tunnel.channel.stream import ChunkBuffer


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
