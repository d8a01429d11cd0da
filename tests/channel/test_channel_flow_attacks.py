"""Memory attacks on reassembly, performed through the channel's wire format (issue 12, finding 2).

A peer that owns a channel can send any STREAM frames it likes within the credit it was given.
Before, only bytes past a stream's highest offset counted against that credit, so segments
shifted by one byte (each overlapping the last but one byte) were all kept: 3 streams whose
highest offset was 21 KB held 66 MB. Now overlaps are never stored twice, the number of held
segments is bounded per stream and per channel, and a peer that goes past a bound has its channel
closed with FLOW_CONTROL_ERROR.

Each test feeds packets built with `frames.encode_packet` to `Channel.receive_packet`, as a
member's node would send them after the session opened them, and measures what the receiver holds
with tracemalloc.
"""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator

import pytest

from tests.support.channel_events import events
from tunnel.channel import frames as fr
from tunnel.channel.channel import Channel
from tunnel.channel.constants import (
    FLOW_CONTROL_ERROR,
    INITIAL_CONNECTION_WINDOW,
    INITIAL_STREAM_WINDOW,
)
from tunnel.channel.events import ChannelClosed

# the figures each attack leaves behind (`pytest -o log_cli=true --log-cli-level=INFO` shows them)
log = logging.getLogger(__name__)

#: stream bytes a full packet carries at the base datagram size
FULL_SEGMENT = 1140
#: the issue's figures: 3 streams, ~20,000 shifted segments each (highest offset ~21 KB)
ATTACK_STREAMS = 3
SHIFTS_PER_STREAM = 20_000


def closed_with(channel: Channel) -> ChannelClosed | None:
    return next((e for e in events(channel) if isinstance(e, ChannelClosed)), None)


def packets(frames: Iterator[fr.StreamFrame]) -> Iterator[bytes]:
    """One frame a packet, numbered as a sender would, so no packet is a duplicate."""
    for pn, frame in enumerate(frames):
        yield fr.encode_packet(pn, [frame])


def held_while_receiving(channel: Channel, datagrams: Iterator[bytes]) -> tuple[int, int]:
    """Feed packets until the channel closes; return (bytes of memory the channel holds then,
    packets fed)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fed = 0
        for datagram in datagrams:
            if not channel.is_open:
                break
            channel.receive_packet(datagram, 1.0)
            fed += 1
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held, fed


def shifted_segments(streams: int, shifts: int) -> Iterator[fr.StreamFrame]:
    """Segments of `FULL_SEGMENT` bytes at offsets 1, 2, 3, ... of each client stream: offset 0
    never comes, so nothing is ever readable, and each segment overlaps the one before it but for
    one byte. Streams take turns, as an attacker spreading over streams would."""
    for shift in range(1, shifts + 1):
        for index in range(streams):
            # fresh bytes per frame, as decoding real packets gives
            data = shift.to_bytes(4, "big") * (FULL_SEGMENT // 4)
            yield fr.StreamFrame(2 * index, shift, data, False)


def test_segments_shifted_by_one_byte_hold_each_byte_once() -> None:
    """The issue's attack at its scale, counted in bytes buffered (before: 68 MB, 76 MB by
    tracemalloc), then a tenth of it measured with tracemalloc (which is slow)."""
    receiver = Channel(False)
    for datagram in packets(shifted_segments(ATTACK_STREAMS, SHIFTS_PER_STREAM)):
        receiver.receive_packet(datagram, 1.0)
    highest = max(s.recv.highest for s in receiver._streams.values())
    buffered = receiver.buffered_bytes()
    log.info(f"shift attack: highest offset {highest} B, {buffered} B buffered")
    assert highest == SHIFTS_PER_STREAM + FULL_SEGMENT
    for stream in receiver._streams.values():
        # bytes 1 .. highest, each once: what the credit counts
        assert stream.recv.buffered == stream.recv.highest - 1
    assert buffered < ATTACK_STREAMS * highest

    receiver = Channel(False)
    shifts = SHIFTS_PER_STREAM // 10
    held, _ = held_while_receiving(receiver, packets(shifted_segments(ATTACK_STREAMS, shifts)))
    log.info(f"shift attack, a tenth: held {held / 1e6:.2f} MB by tracemalloc")
    assert held < 10 * ATTACK_STREAMS * (shifts + FULL_SEGMENT), f"{held / 1e6:.1f} MB held"


def test_overlapping_segments_within_the_limits_hold_no_more_than_the_credit() -> None:
    """An attacker that stays just under the segment limits: the shifted segments of one stream
    hold about what its highest offset says, not a full segment each."""
    receiver = Channel(False)
    frames = (fr.StreamFrame(0, shift, bytes(FULL_SEGMENT), False) for shift in range(1, 1001))
    held, _ = held_while_receiving(receiver, packets(frames))
    assert receiver.is_open
    (stream,) = receiver._streams.values()
    assert stream.recv.buffered == 1000 + FULL_SEGMENT - 1  # bytes 1 .. highest, once each
    assert held < 200_000, f"{held} bytes held for 2 KB of stream"


def test_one_byte_segments_with_gaps_close_the_channel(caplog: pytest.LogCaptureFixture) -> None:
    """The fragmentation attack: one-byte segments two bytes apart, within the stream credit,
    each costing the receiver far more bookkeeping than data."""
    receiver = Channel(False, peer="SHA256:attacker")
    frames = (fr.StreamFrame(0, 2 * i + 1, b"x", False) for i in range(INITIAL_STREAM_WINDOW // 2))
    with caplog.at_level(logging.WARNING, logger="tunnel.channel.channel"):
        held, fed = held_while_receiving(receiver, packets(frames))
    log.info(f"one-byte segments: closed after {fed} packets, held {held / 1e6:.2f} MB")
    closed = closed_with(receiver)
    assert closed is not None and closed.error_code == FLOW_CONTROL_ERROR
    assert fed < INITIAL_STREAM_WINDOW // 2  # closed long before the credit ran out
    assert held < 1024 * 1024
    assert not receiver.is_open
    # one WARNING line names the peer and the reason
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "SHA256:attacker" in record.getMessage()
    assert "out-of-order segments" in record.getMessage()
    assert "FLOW_CONTROL_ERROR" in record.getMessage()
    # the CLOSE frame tells the peer why
    (close_packet,) = receiver.packets_to_send(1.0)
    decoded = fr.decode_packet(close_packet)
    assert decoded is not None
    (frame,) = decoded[1]
    assert isinstance(frame, fr.CloseFrame) and frame.error_code == FLOW_CONTROL_ERROR
    assert "out-of-order segments" in frame.reason


def test_one_byte_segments_over_many_streams_hit_the_channel_limit() -> None:
    """Spread over many streams, each stream stays under its own limit; the channel's does not."""
    receiver = Channel(False)
    frames = (
        fr.StreamFrame(2 * (i % 512), 2 * (i // 512) + 1, b"x", False) for i in range(200_000)
    )
    held, fed = held_while_receiving(receiver, packets(frames))
    closed = closed_with(receiver)
    assert closed is not None and closed.error_code == FLOW_CONTROL_ERROR
    assert fed < 200_000
    assert held < 4 * 1024 * 1024


def test_tiny_in_order_frames_for_a_stalled_reader_stay_compact() -> None:
    """In-order data the application has not read yet is held too: 30,000 two-byte frames
    (a thousand to a packet) must cost about their bytes, not a Python object each."""
    receiver = Channel(False)
    per_packet = 1000
    count = 30_000

    def batches() -> Iterator[bytes]:
        for pn, start in enumerate(range(0, count, per_packet)):
            frames: list[fr.Frame] = [
                fr.StreamFrame(0, 2 * offset, b"yz", False)
                for offset in range(start, min(count, start + per_packet))
            ]
            yield fr.encode_packet(pn, frames)

    held, _ = held_while_receiving(receiver, batches())
    assert receiver.is_open
    log.info(f"two-byte in-order frames: {2 * count} B of stream, held {held / 1e6:.2f} MB")
    assert held < 2 * 2 * count, f"{held / 1e6:.2f} MB held for {2 * count} B of stream"
    assert receiver.read(0) == b"yz" * count


def test_a_full_window_behind_one_lost_packet_stays_open() -> None:
    """The honest worst case: the first packet of each stream is lost and the sender fills the
    rest of the connection credit with full packets before the retransmission arrives."""
    receiver = Channel(False)
    half = INITIAL_CONNECTION_WINDOW // 2  # two streams share the connection credit

    offsets = range(FULL_SEGMENT, half - FULL_SEGMENT, FULL_SEGMENT)

    def frames() -> Iterator[fr.StreamFrame]:
        for offset in offsets:
            for sid in (0, 2):
                yield fr.StreamFrame(sid, offset, bytes(FULL_SEGMENT), False)

    for datagram in packets(frames()):
        receiver.receive_packet(datagram, 1.0)
    assert receiver.is_open
    held = sum(s.recv.held_segments for s in receiver._streams.values())
    assert held > 2500  # nearly the whole credit waits behind the two holes
    for pn, sid in enumerate((0, 2), start=10_000):  # the retransmissions
        receiver.receive_packet(
            fr.encode_packet(pn, [fr.StreamFrame(sid, 0, bytes(FULL_SEGMENT), False)]), 1.1
        )
    assert receiver.is_open
    for sid in (0, 2):
        data = receiver.read(sid)
        assert len(data) == offsets[-1] + FULL_SEGMENT
    assert not any(s.recv.held_segments for s in receiver._streams.values())


def test_small_writes_of_many_streams_behind_lost_packets_stay_open() -> None:
    """Honest small segments: 1,000 interactive streams each lose their first frame and send 20
    more small writes before it is retransmitted. 20,000 waiting segments, over the channel's
    limit if each counted; they continue one another, so each stream holds one piece."""
    receiver = Channel(False)
    streams = range(0, 2000, 2)

    def frames() -> Iterator[fr.StreamFrame]:
        for write in range(1, 21):
            for sid in streams:
                yield fr.StreamFrame(sid, 50 * write, bytes(50), False)

    for datagram in packets(frames()):
        receiver.receive_packet(datagram, 1.0)
    assert receiver.is_open
    assert sum(s.recv.held_segments for s in receiver._streams.values()) == len(streams)
    for pn, sid in enumerate(streams, start=100_000):  # the retransmissions
        receiver.receive_packet(fr.encode_packet(pn, [fr.StreamFrame(sid, 0, bytes(50), False)]), 2)
    assert receiver.is_open
    assert all(len(receiver.read(sid)) == 21 * 50 for sid in streams)
