"""Properties of the stream halves: any segmentation, order and duplication of a byte stream
reassembles to the original; lost and acknowledged frames in any order leave the sender holding
exactly what the peer still needs."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.channel.reassembly import Reassembly, compact
from tunnel.channel.stream import ReceiveStream, ReceiveWindow, SendStream


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(0, 2**32), st.integers(0, 30))
def test_any_order_and_duplication_reassembles(payload: bytes, seed: int, dups: int) -> None:
    rng = random.Random(seed)
    cuts = sorted({0, len(payload), *(rng.randrange(len(payload)) for _ in range(10))})
    segments = [(a, payload[a:b]) for a, b in itertools.pairwise(cuts)]
    segments += [rng.choice(segments) for _ in range(dups)]
    # overlapping re-chunked copies too, as a retransmission in other frame sizes would be
    for _ in range(dups // 3):
        start = rng.randrange(len(payload))
        end = min(len(payload), start + rng.randrange(1, 400))
        segments.append((start, payload[start:end]))
    rng.shuffle(segments)
    recv = ReceiveStream(ReceiveWindow(1 << 20, 1 << 20))
    out = bytearray()
    for offset, data in segments:
        fin = offset + len(data) == len(payload)
        # a large frame arrives as a view of its packet: views and copies must mix
        recv.on_frame(offset, memoryview(data) if rng.random() < 0.5 else data, fin)
        if rng.random() < 0.3:
            out += b"".join(recv.take(rng.randrange(1, 500)))
    out += b"".join(recv.take(None))
    assert bytes(out) == payload
    assert recv.eof_delivered and recv.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20_000), st.integers(0, 2**32))
def test_sender_keeps_exactly_what_is_unacknowledged(size: int, seed: int) -> None:
    rng = random.Random(seed)
    payload = rng.randbytes(size)
    send = SendStream(1 << 20, 1 << 30)
    assert send.write(payload) == size
    send.fin_requested = True
    delivered: dict[int, bytes] = {}
    in_flight: list[tuple[int, int, bool]] = []
    for _ in range(10_000):
        if send.wants_to_send(1 << 30):
            offset, data, fin, _ = send.next_frame(rng.randrange(1, 1500), 1 << 30)
            assert data == payload[offset : offset + len(data)]  # never wrong bytes
            in_flight.append((offset, len(data), fin))
        elif not in_flight:
            break
        if in_flight and rng.random() < 0.5:
            offset, length, fin = in_flight.pop(rng.randrange(len(in_flight)))
            if rng.random() < 0.25:
                send.on_data_lost(offset, length, fin)
            else:
                send.on_data_acked(offset, length, fin)
                delivered[offset] = payload[offset : offset + length]
    assert send.done  # everything and the FIN acknowledged: the buffer is empty
    covered = bytearray(size)
    for offset, data in delivered.items():
        covered[offset : offset + len(data)] = b"\x01" * len(data)
    assert all(covered)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(1, 120)), min_size=1, max_size=60),
    st.integers(0, 2**32),
)
def test_reassembly_holds_each_received_byte_once_and_correctly(
    segments: list[tuple[int, int]], seed: int
) -> None:
    """Any overlap of segments: the pieces stay sorted and disjoint, hold exactly the bytes
    received (each once, with the right value), and `size` and the piece count add up."""
    payload = random.Random(seed).randbytes(500)
    held = Reassembly()
    covered: set[int] = set()
    pieces = 0
    for offset, length in segments:
        change = held.insert(offset, payload[offset : offset + length], room=1)
        assert change is not None and change <= 1
        pieces += change
        covered.update(range(offset, offset + length))
        starts, chunks = held._starts, held._pieces
        assert len(starts) == pieces and held.size == sum(len(c) for c in chunks)
        assert all(a + len(c) <= b for a, c, b in zip(starts, chunks, starts[1:], strict=False))
        assert {i for a, c in zip(starts, chunks, strict=True) for i in range(a, a + len(c))} == (
            covered
        )
        assert all(c == payload[a : a + len(c)] for a, c in zip(starts, chunks, strict=True))
    # the contiguous run from the lowest byte comes out in order; the rest stays
    first = run_end = min(covered)
    while run_end in covered:
        run_end += 1
    out, count = held.take_from(first)
    assert b"".join(out) == payload[first:run_end]
    assert held.size == len(covered) - (run_end - first) and len(held) == pieces - count


def test_reassembly_refuses_a_new_piece_without_room_and_changes_nothing() -> None:
    held = Reassembly()
    assert held.insert(10, b"abc", room=1) == 1
    assert held.insert(20, b"def", room=0) is None  # a second piece: no room
    assert held.insert(11, b"bc", room=0) == 0  # already held: no room needed
    assert held.insert(13, b"d", room=0) == 0  # continues the piece: coalesced, no new piece
    assert held._starts == [10] and held._pieces == [b"abcd"] and held.size == 4


def test_a_few_bytes_of_a_packet_never_keep_the_whole_packet_alive() -> None:
    """A frame may arrive as a view of its packet; what is kept of it must be at least half of
    that packet, or a copy (a trimmed retransmission would otherwise pin 64 KB per byte)."""
    packet = bytes(range(256)) * 40  # 10,240 bytes
    whole = memoryview(packet)[100:]
    assert compact(whole) is whole  # most of its packet: kept as the view it is
    assert type(compact(whole[:1000])) is bytes and compact(whole[:1000]) == packet[100:1100]
    # held out of order: a retransmission trimmed by what is already held is stored as a copy
    pending = Reassembly()
    assert pending.insert(1000, packet[:9000], room=10) == 1
    assert pending.insert(1000, memoryview(packet)[:9100], room=10) == 1  # its last 100 bytes
    chunks, count = pending.take_from(1000)
    assert b"".join(chunks) == packet[:9100] and count == 2
    assert all(type(chunk) is bytes for chunk in chunks)
    # in order: the new tail of an overlapping retransmission is a copy too
    recv = ReceiveStream(ReceiveWindow(1 << 20, 1 << 20))
    recv.on_frame(0, packet[:9000], False)
    recv.on_frame(0, memoryview(packet)[:9100], False)
    assert [type(chunk) for chunk in recv.take(None)] == [bytes, bytes]
