"""AckState's ACK frames: newest range first, ranges the peer saw acknowledged not repeated, at
most MAX_ACK_RANGES, and the pending ACK cleared by encoding it."""

from __future__ import annotations

from tunnel.channel import frames as fr
from tunnel.channel.acks import AckState
from tunnel.channel.constants import MAX_ACK_RANGES


def received(*packet_numbers: int) -> AckState:
    acks = AckState()
    for pn in packet_numbers:
        acks.on_ack_eliciting(acks.on_packet_received(pn, 1.0), 1.0)
    return acks


def decoded(frame: bytes) -> fr.AckFrame:
    result = fr.decode_packet(fr.encode_varint(0) + frame)
    assert result is not None
    (ack,) = result[1]
    assert isinstance(ack, fr.AckFrame)
    return ack


def test_ranges_newest_first_with_largest_and_count() -> None:
    acks = received(0, 1, 2, 3, 4, 7, 8, 9, 12)
    assert acks.pending
    frame, largest, count = acks.encode(1.0015)
    assert (largest, count) == (12, 3)
    ack = decoded(frame)
    assert ack.ranges == ((12, 12), (7, 9), (0, 4))
    assert ack.ack_delay_us == 1500
    assert (acks.pending, acks.deadline) == (False, None)


def test_ranges_the_peer_has_seen_are_not_repeated() -> None:
    acks = received(0, 1, 2, 3, 4, 7, 8, 9, 12)
    acks.on_ack_acknowledged(8)  # the peer has our ACK of everything up to 8
    assert decoded(acks.encode(1.0)[0]).ranges == ((12, 12), (9, 9))
    acks.on_ack_acknowledged(12)
    # the highest range always goes, even when the peer has seen it
    assert decoded(acks.encode(1.0)[0]).ranges == ((12, 12),)


def test_at_most_max_ack_ranges() -> None:
    acks = received(*range(0, 4 * MAX_ACK_RANGES, 2))  # every other packet: one range each
    frame, largest, count = acks.encode(1.0)
    assert (largest, count) == (4 * MAX_ACK_RANGES - 2, MAX_ACK_RANGES)
    ranges = decoded(frame).ranges
    assert ranges == tuple((pn, pn) for pn in range(4 * MAX_ACK_RANGES - 2, 0, -2)[:MAX_ACK_RANGES])
