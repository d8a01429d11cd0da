"""Frame codec: golden bytes, round trips, and garbage never raising (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.channel import frames as fr

varints = st.integers(0, fr.VARINT_MAX)
small = st.integers(0, 2**20)


def test_varint_golden_values() -> None:
    # RFC 9000 appendix A.1 examples
    assert fr.encode_varint(37) == bytes.fromhex("25")
    assert fr.encode_varint(15293) == bytes.fromhex("7bbd")
    assert fr.encode_varint(494878333) == bytes.fromhex("9d7f3e7d")
    assert fr.encode_varint(151288809941952652) == bytes.fromhex("c2197c5eff14e88c")
    assert fr._varint(bytes.fromhex("c2197c5eff14e88c"), 0) == (151288809941952652, 8)


def test_stream_frame_golden() -> None:
    packet = fr.encode_packet(5, [fr.StreamFrame(4, 1000, b"hi", True)])
    assert packet == bytes.fromhex("05" "09" "04" "43e8" "02") + b"hi"
    assert fr.decode_packet(packet) == (5, [fr.StreamFrame(4, 1000, b"hi", True)])


def test_stream_header_golden_in_each_shape() -> None:
    # the whole-integer shapes (4- and 8-byte offsets) and the general one (2-byte offset)
    assert fr.encode_stream_header(3, 0x12345, 1400, False) == bytes.fromhex(
        "08" "03" "80012345" "4578")
    assert fr.encode_stream_header(63, 0x123456789A, 0x3FFF, True) == bytes.fromhex(
        "09" "3f" "c00000123456789a" "7fff")
    assert fr.encode_stream_header(64, 1000, 2, False) == bytes.fromhex("08" "4040" "43e8" "02")


def _by_varints(stream_id: int, offset: int, length: int, fin: bool) -> bytes:
    return (bytes((0x09 if fin else 0x08,)) + fr.encode_varint(stream_id)
            + fr.encode_varint(offset) + fr.encode_varint(length))


@given(st.integers(0, 2**30), varints, st.integers(0, 2**20), st.booleans())
def test_stream_header_is_its_varints_whatever_the_shape(
    stream_id: int, offset: int, length: int, fin: bool
) -> None:
    assert fr.encode_stream_header(stream_id, offset, length, fin) == (
        _by_varints(stream_id, offset, length, fin))


def test_stream_header_is_its_varints_at_every_size_boundary() -> None:
    edges = [0, 0x3F, 0x40, 0x3FFF, 0x4000, 0x3FFFFFFF, 0x40000000, fr.VARINT_MAX]
    for stream_id in edges[:5]:
        for offset in edges:
            for length in edges[:6]:
                assert fr.encode_stream_header(stream_id, offset, length, True) == (
                    _by_varints(stream_id, offset, length, True)), (stream_id, offset, length)


def test_stream_header_refuses_what_no_varint_holds() -> None:
    for bad in ((0, fr.VARINT_MAX + 1, 1400), (-1, 0x4000, 1400), (0, -1, 1400)):
        with pytest.raises(ValueError):
            fr.encode_stream_header(*bad, False)


def test_ack_frame_golden() -> None:
    # acks 10..12 and 5..7: largest 12, first range 2, gap 7-... = 10-7-2 = 1, length 2
    frame = fr.AckFrame(((10, 12), (5, 7)), 250)
    assert fr.encode_frame(frame) == bytes.fromhex("02" "0c" "40fa" "01" "02" "01" "02")
    assert fr.decode_packet(b"\x00" + fr.encode_frame(frame)) == (0, [frame])


def test_truncated_and_unknown_input_is_rejected() -> None:
    packet = fr.encode_packet(1, [fr.StreamFrame(0, 0, b"abcdef", False)])
    for cut in range(len(packet)):
        assert fr.decode_packet(packet[:cut]) is None
    assert fr.decode_packet(b"\x01\xff") is None  # unknown frame type
    assert fr.decode_packet(b"\x01") is None  # no frames at all
    assert fr.decode_packet(b"\x01\x02\x05\x00\x00\x09") is None  # ack below zero


def _stream_ids() -> st.SearchStrategy[int]:
    return st.integers(0, 2**40)


frame_strategy = st.one_of(
    st.builds(fr.PingFrame),
    st.builds(
        fr.StreamFrame, _stream_ids(), st.integers(0, 2**50), st.binary(max_size=64), st.booleans()
    ),
    st.builds(fr.ResetStreamFrame, _stream_ids(), varints, varints),
    st.builds(fr.StopSendingFrame, _stream_ids(), varints),
    st.builds(fr.MaxDataFrame, varints),
    st.builds(fr.MaxStreamDataFrame, _stream_ids(), varints),
    st.builds(fr.MaxStreamsFrame, varints),
    st.builds(fr.DatagramFrame, st.binary(max_size=64)),
    st.builds(fr.CloseFrame, varints, st.text(max_size=20)),
)


@st.composite
def ack_frames(draw: st.DrawFn) -> fr.AckFrame:
    points = sorted(set(draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=20))))
    # build disjoint, non-adjacent inclusive ranges from sorted points paired up
    ranges: list[tuple[int, int]] = []
    for value in points:
        if ranges and value <= ranges[-1][1] + 1:
            continue
        end = value + draw(st.integers(0, 5))
        ranges.append((value, end))
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return fr.AckFrame(tuple(reversed(merged)), draw(st.integers(0, 2**30)))


@settings(max_examples=400, deadline=None)
@given(varints, st.lists(st.one_of(frame_strategy, ack_frames()), min_size=1, max_size=8))
def test_round_trip(packet_number: int, frames: list[fr.Frame]) -> None:
    assert fr.decode_packet(fr.encode_packet(packet_number, frames)) == (packet_number, frames)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    result = fr.decode_packet(data)
    if result is not None:
        _, frames = result
        assert frames  # a decoded packet always carries something


@settings(max_examples=500, deadline=None)
@given(varints, st.lists(frame_strategy, min_size=1, max_size=4), st.data())
def test_bit_flips_never_raise(
    packet_number: int, frames: list[fr.Frame], data: st.DataObject
) -> None:
    packet = bytearray(fr.encode_packet(packet_number, frames))
    index = data.draw(st.integers(0, len(packet) - 1))
    packet[index] ^= 1 << data.draw(st.integers(0, 7))
    fr.decode_packet(bytes(packet))


def test_a_frame_that_is_most_of_a_large_packet_is_a_view_and_any_other_a_copy() -> None:
    big = bytes(range(256)) * 32  # 8,192 bytes
    small = fr.StreamFrame(0, 0, b"small", False)
    frames: list[fr.Frame] = [small, fr.StreamFrame(4, 0, big, True)]
    decoded = fr.decode_packet(fr.encode_packet(7, frames))
    assert decoded is not None
    small_frame, big_frame = decoded[1]
    assert isinstance(small_frame, fr.StreamFrame) and isinstance(big_frame, fr.StreamFrame)
    assert type(small_frame.data) is bytes and small_frame.data == b"small"
    assert isinstance(big_frame.data, memoryview) and big_frame.data == big
    # two large frames sharing a packet: neither is most of it, so neither may pin it
    half = big[: fr.VIEW_MIN + 10]
    pair = fr.decode_packet(fr.encode_packet(8, [fr.StreamFrame(0, 0, half, False),
                                                 fr.StreamFrame(4, 0, half + b"x", False)]))
    assert pair is not None
    assert [type(f.data) for f in pair[1] if isinstance(f, fr.StreamFrame)] == [bytes, bytes]
    # a frame below VIEW_MIN is copied even when it is the whole packet
    below = fr.StreamFrame(0, 0, big[: fr.VIEW_MIN - 1], False)
    alone = fr.decode_packet(fr.encode_packet(9, [below]))
    assert alone is not None and alone[1] == [below]
    assert isinstance(alone[1][0], fr.StreamFrame) and type(alone[1][0].data) is bytes
