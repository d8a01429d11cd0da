"""Properties of the stream halves: any segmentation, order and duplication of a byte stream
reassembles to the original; lost and acknowledged frames in any order leave the sender holding
exactly what the peer still needs."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

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
        recv.on_frame(offset, data, fin)
        if rng.random() < 0.3:
            out += recv.read(rng.randrange(1, 500))
    out += recv.read(None)
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
