"""Fuzz the channel state machine: random frame sequences, garbage and application calls in any
order. No exception may escape (except ChannelError for the application's own misuse), every
packet it emits fits the budget and parses, and buffers stay within the credit it granted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.channel import frames as fr
from tunnel.channel.channel import Channel, ChannelError
from tunnel.channel.events import ChannelClosed

small_ids = st.integers(0, 12)
offsets = st.integers(0, 1_200_000)
codes = st.integers(0, 2**16)

frames = st.one_of(
    st.builds(fr.StreamFrame, small_ids, offsets, st.binary(max_size=200), st.booleans()),
    st.builds(fr.PingFrame),
    st.builds(fr.PaddingFrame, st.integers(1, 20)),
    st.builds(
        fr.AckFrame,
        st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=3).map(
            lambda pairs: tuple(
                (lo, hi)
                for lo, hi in sorted(
                    {(min(x, y) * 3 + 200 - 200, max(x, y) * 3) for x, y in pairs}, reverse=True
                )
            )
        ),
        st.integers(0, 100_000),
    ),
    st.builds(fr.ResetStreamFrame, small_ids, codes, offsets),
    st.builds(fr.StopSendingFrame, small_ids, codes),
    st.builds(fr.MaxDataFrame, st.integers(0, 2**40)),
    st.builds(fr.MaxStreamDataFrame, small_ids, st.integers(0, 2**40)),
    st.builds(fr.MaxStreamsFrame, st.integers(0, 1000)),
    st.builds(fr.DatagramFrame, st.binary(max_size=100)),
    st.builds(fr.CloseFrame, codes, st.text(max_size=10)),
)

actions = st.one_of(
    st.tuples(st.just("packet"), st.integers(0, 40), st.lists(frames, min_size=1, max_size=4)),
    st.tuples(st.just("garbage"), st.binary(max_size=80)),
    st.tuples(st.just("open"),),
    st.tuples(st.just("write"), small_ids, st.integers(0, 5000)),
    st.tuples(st.just("read"), small_ids),
    st.tuples(st.just("shutdown"), small_ids),
    st.tuples(st.just("reset"), small_ids, codes),
    st.tuples(st.just("stop"), small_ids, codes),
    st.tuples(st.just("datagram"), st.binary(max_size=50)),
    st.tuples(st.just("time"), st.floats(0.0, 2.0)),
    st.tuples(st.just("close"),),
)


def well_formed_ack(frame: fr.Frame) -> bool:
    if not isinstance(frame, fr.AckFrame):
        return True
    ranges = frame.ranges
    return all(lo <= hi for lo, hi in ranges) and all(
        ranges[i][0] > ranges[i + 1][1] + 1 for i in range(len(ranges) - 1)
    )


def check_invariants(channel: Channel, now: float) -> None:
    for packet in channel.packets_to_send(now):
        assert len(packet) <= channel.max_packet_size
        assert fr.decode_packet(packet) is not None
    for stream in channel._streams.values():
        recv = stream.recv
        # we never hold more than the credit we granted beyond what the application read
        assert recv.buffered <= recv.window.max_data - min(recv.read_offset, recv.window.max_data)
        assert stream.send.buffered <= stream.send.buffer_limit
    assert channel._recovery.bytes_in_flight >= 0
    deadline = channel.get_timer()
    assert deadline is None or deadline == deadline  # not NaN


def run_actions(is_client: bool, steps: list[tuple[object, ...]]) -> None:
    channel = Channel(is_client, rng=lambda n: bytes(n))
    now = 0.0
    closed = False
    for step in steps:
        kind = step[0]
        try:
            if kind == "packet":
                pn, frame_list = step[1], step[2]
                assert isinstance(pn, int) and isinstance(frame_list, list)
                usable = [f for f in frame_list if well_formed_ack(f)]
                if usable:
                    channel.receive_packet(fr.encode_packet(pn, usable), now)
            elif kind == "garbage":
                assert isinstance(step[1], bytes)
                channel.receive_packet(step[1], now)
            elif kind == "open":
                channel.open_stream()
            elif kind == "write":
                assert isinstance(step[1], int) and isinstance(step[2], int)
                channel.write(step[1], b"w" * step[2])
            elif kind == "read":
                assert isinstance(step[1], int)
                channel.read(step[1])
            elif kind == "shutdown":
                assert isinstance(step[1], int)
                channel.shutdown_write(step[1])
            elif kind == "reset":
                assert isinstance(step[1], int) and isinstance(step[2], int)
                channel.reset_stream(step[1], step[2])
            elif kind == "stop":
                assert isinstance(step[1], int) and isinstance(step[2], int)
                channel.stop_reading(step[1], step[2])
            elif kind == "datagram":
                assert isinstance(step[1], bytes)
                channel.send_datagram(step[1])
            elif kind == "time":
                assert isinstance(step[1], float)
                now += step[1]
                deadline = channel.get_timer()
                if deadline is not None and deadline <= now:
                    channel.handle_timer(now)
            elif kind == "close":
                channel.close("fuzz")
        except ChannelError:
            pass  # the application's own misuse (unknown stream, write after FIN)
        check_invariants(channel, now)
        while (event := channel.next_event()) is not None:
            if isinstance(event, ChannelClosed):
                assert not closed, "reported closed twice"
                closed = True
        if closed:
            assert not channel.is_open


@settings(max_examples=250, deadline=None)
@given(st.booleans(), st.lists(actions, max_size=40))
def test_random_sequences_never_raise_or_break_invariants(
    is_client: bool, steps: list[tuple[object, ...]]
) -> None:
    run_actions(is_client, steps)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=20))
def test_garbage_packets_are_dropped_without_effect(packets: list[bytes]) -> None:
    channel = Channel(False)
    for packet in packets:
        channel.receive_packet(packet, 0.0)
    decodable = [p for p in packets if fr.decode_packet(p) is not None]
    if not decodable:
        assert channel.next_event() is None
        assert channel.stats().packets_received == 0
        assert channel.stats().packets_dropped == len(packets)
