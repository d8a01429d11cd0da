"""`Channel.packet_prefix` and `receive_packet(..., start)`: the layer below's header is built
into each packet and skipped on arrival without a copy, and neither changes what the channel
sends, counts or receives."""

from __future__ import annotations

import random

from tunnel.channel.channel import Channel
from tunnel.channel.constants import PARTS_MIN
from tunnel.channel.events import ChannelClosed, StreamReadable

PREFIX = b"\x03abcdEFGH"


def channel(is_client: bool) -> Channel:
    return Channel(is_client, rng=random.Random(7).randbytes)


def transfer(prefix: bytes, payload: bytes) -> tuple[list[bytes], bytes, Channel, Channel]:
    """Send `payload` on one stream from a to b and close; a's packets (as sent) and what b
    read. b is fed each packet past the prefix, the way a peer does."""
    a, b = channel(True), channel(False)
    a.packet_prefix = b.packet_prefix = prefix
    sid = a.open_stream()
    assert a.write(sid, payload) == len(payload)
    a.shutdown_write(sid)
    sent: list[bytes] = []
    received = bytearray()
    now = 0.0
    for _ in range(200):
        for packet in a.packets_to_send(now):
            sent.append(packet)
            b.receive_packet(packet, now, len(prefix))
        for packet in b.packets_to_send(now):
            a.receive_packet(packet, now, len(prefix))
        while (event := b.next_event()) is not None:
            assert not isinstance(event, ChannelClosed)
            if isinstance(event, StreamReadable):
                received += b.read(event.stream_id)
        now += 0.001
    return sent, bytes(received), a, b


def test_every_packet_starts_with_the_prefix_and_the_rest_is_unchanged() -> None:
    payload = random.Random(1).randbytes(50_000)
    plain, got_plain, a_plain, _ = transfer(b"", payload)
    prefixed, got_prefixed, a_prefixed, b_prefixed = transfer(PREFIX, payload)
    assert got_plain == got_prefixed == payload
    assert all(p.startswith(PREFIX) for p in prefixed)
    assert [p[len(PREFIX):] for p in prefixed] == plain
    # counts and the congestion controller see the channel's packet, not the header
    assert a_prefixed.stats().bytes_sent == a_plain.stats().bytes_sent
    assert b_prefixed.stats().bytes_received == sum(len(p) for p in plain)
    assert all(len(p) - len(PREFIX) <= a_prefixed.max_packet_size for p in prefixed)


def test_closing_packets_carry_the_prefix_too() -> None:
    a = channel(True)
    a.packet_prefix = PREFIX
    a.close("bye")
    packets = a.packets_to_send(0.0)
    assert packets and all(p.startswith(PREFIX) for p in packets)


def test_a_malformed_packet_past_the_offset_is_dropped_and_counted() -> None:
    b = channel(False)
    b.receive_packet(PREFIX + b"\x00\x2a", 0.0, len(PREFIX))  # packet number, unknown frame
    assert b.stats().packets_dropped == 1
    assert b.stats().bytes_received == 0
    assert b.next_event() is None


def test_large_packets_reach_the_reader_as_views_of_the_packets_that_carried_them() -> None:
    """At path-MTU packets the receiver copies a frame's bytes once, into the socket: a stream's
    chunks are views of immutable packets, so they stay intact after more packets arrive."""
    a = Channel(True, rng=random.Random(7).randbytes, max_packet_size=60_000)
    b = Channel(False, rng=random.Random(8).randbytes, max_packet_size=60_000)
    payload = random.Random(3).randbytes(400_000)
    sid = a.open_stream()
    assert a.write(sid, payload) == len(payload)
    a.shutdown_write(sid)
    chunks: list[bytes | memoryview] = []
    now = 0.0
    for _ in range(300):
        for packet in a.packets_to_send(now):
            b.receive_packet(packet, now)
        for packet in b.packets_to_send(now):
            a.receive_packet(packet, now)
        while (event := b.next_event()) is not None:
            if isinstance(event, StreamReadable):  # read the way the bridge does: in slices
                while taken := b.read_chunks(event.stream_id, 100_000):
                    chunks += taken
        now += 0.001
    assert b"".join(chunks) == payload and b.is_eof(sid)
    assert sum(isinstance(chunk, memoryview) for chunk in chunks) >= len(payload) // 60_000


def test_large_packets_are_handed_over_as_their_parts_and_small_ones_joined() -> None:
    """A packet of PARTS_MIN bytes or more comes as the parts it is the join of (the sealer
    encrypts them in turn); a smaller one as bytes. Either way it is the packet the peer reads."""
    a = Channel(True, rng=random.Random(7).randbytes, max_packet_size=60_000)
    b = Channel(False, rng=random.Random(8).randbytes, max_packet_size=60_000)
    a.packet_prefix = b.packet_prefix = PREFIX
    payload = random.Random(4).randbytes(200_000)
    sid = a.open_stream()
    assert a.write(sid, payload) == len(payload)
    a.shutdown_write(sid)
    received = bytearray()
    kinds: set[tuple[bool, bool]] = set()  # (is parts, is at least PARTS_MIN)
    now = 0.0
    for _ in range(300):
        for side, other in ((a, b), (b, a)):
            for packet in side.packet_parts_to_send(now):
                joined = packet if isinstance(packet, bytes) else b"".join(packet)
                assert joined.startswith(PREFIX)
                kinds.add((isinstance(packet, list), len(joined) - len(PREFIX) >= PARTS_MIN))
                other.receive_packet(joined, now, len(PREFIX))
        while (event := b.next_event()) is not None:
            if isinstance(event, StreamReadable):
                received += b.read(event.stream_id)
        now += 0.001
    assert bytes(received) == payload
    assert kinds == {(True, True), (False, False)}  # data packets as parts, b's ACKs joined
