"""Fuzz targets of the channel: the packet decoder and the receiving state machine."""

from __future__ import annotations

from tests.fuzz.target import Check, Target
from tunnel.channel import frames as fr
from tunnel.channel.channel import Channel
from tunnel.channel.stream import held_segment_limit


def _seed_packets() -> list[bytes]:
    """Packets of every frame type, as a peer (the client: even stream ids) sends them."""
    frames: list[list[fr.Frame]] = [
        [fr.StreamFrame(0, 0, b"hello", False)],
        [fr.StreamFrame(0, 5, b" world", True), fr.PingFrame()],
        [fr.StreamFrame(2, 100, bytes(300), False), fr.PaddingFrame(20)],
        [fr.AckFrame(((10, 12), (4, 7), (0, 1)), 250)],
        [fr.ResetStreamFrame(4, 7, 1000), fr.StopSendingFrame(1, 3)],
        [fr.MaxDataFrame(1 << 24), fr.MaxStreamDataFrame(1, 1 << 22), fr.MaxStreamsFrame(5000)],
        [fr.DatagramFrame(b"udp payload"), fr.PingFrame()],
        [fr.CloseFrame(0x3, "flow control")],
    ]
    return [fr.encode_packet(pn, f) for pn, f in enumerate(frames)]


def _check_decoder(data: bytes) -> None:
    decoded = fr.decode_packet(data)
    if decoded is None:
        return
    pn, frames = decoded
    assert frames and all(isinstance(f, fr.Frame) for f in frames)
    assert fr.decode_packet(fr.encode_packet(pn, frames)) == decoded, "no round trip"


def setup_decoder() -> tuple[Check, list[bytes]]:
    return _check_decoder, _seed_packets()


def _fresh_channel() -> Channel:
    channel = Channel(False, rng=lambda n: bytes(n))
    sid = channel.open_stream()  # something of ours in flight, for ACK and STOP_SENDING frames
    channel.write(sid, b"ours" * 100)
    channel.packets_to_send(0.0)
    return channel


def _check_invariants(channel: Channel) -> None:
    budget_held = 0
    for stream in channel._streams.values():
        recv = stream.recv
        assert recv.buffered <= max(0, recv.window.max_data - recv.read_offset), "over credit"
        assert recv.held_segments <= held_segment_limit(recv.window.window)
        budget_held += recv.held_segments
        budget = recv.budget
    if channel._streams:
        assert budget.held == budget_held <= budget.limit, "segment count out of step"
    for packet in channel.packets_to_send(1.0):
        assert len(packet) <= channel.max_packet_size
        assert fr.decode_packet(packet) is not None, "sent a packet that does not parse"


def _split(data: bytes) -> list[bytes]:
    """A sequence of packets: each a length byte then that many bytes."""
    packets = []
    pos = 0
    while pos < len(data):
        length = data[pos]
        packets.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return packets


def _check_receiver(data: bytes) -> None:
    channel = _fresh_channel()
    now = 1.0
    for packet in _split(data):
        before = channel.stats()
        events_before = len(channel._events)
        channel.receive_packet(packet, now)
        if channel.is_open and fr.decode_packet(packet) is None:
            # rejected: counted, and nothing else moved
            after = channel.stats()
            assert after.packets_dropped == before.packets_dropped + 1
            assert after.packets_received == before.packets_received
            assert after.stream_bytes_received == before.stream_bytes_received
            assert len(channel._events) == events_before
        _check_invariants(channel)
        now += 0.01
        deadline = channel.get_timer()
        if deadline is not None and deadline <= now:
            channel.handle_timer(now)
    while channel.next_event() is not None:
        pass
    for sid in list(channel._streams):
        channel.read(sid)


def setup_receiver() -> tuple[Check, list[bytes]]:
    seeds = []
    packets = _seed_packets()
    for start in range(len(packets)):
        chosen = packets[start:] + packets[:start]
        seeds.append(b"".join(bytes((len(p),)) + p for p in chosen if len(p) < 256))
    # reassembly: out-of-order and overlapping segments of one stream
    segments = [(5, b"56789"), (2, b"234567"), (9, b"9abc"), (0, b"01"), (1, b"1234")]
    seeds.append(
        b"".join(
            bytes((len(p),)) + p
            for pn, (offset, data) in enumerate(segments)
            for p in [fr.encode_packet(pn, [fr.StreamFrame(0, offset, data, False)])]
        )
    )
    return _check_receiver, seeds


TARGETS = (
    Target("channel-frames", setup_decoder),
    Target("channel-receive", setup_receiver),
)
