"""Stream semantics of the channel: many streams, backpressure and bounded memory, half-close,
reset and stop, datagrams, independence of streams under loss, limits, timeouts, peer errors."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from lab.netsim import BulkApp, ChannelEndpoint, FlowApp, LinkConfig, Simulator, channel_pair
from tests.support.channel_events import events
from tunnel.channel import frames as fr
from tunnel.channel.channel import Channel, ChannelError
from tunnel.channel.constants import (
    FINAL_SIZE_ERROR,
    FLOW_CONTROL_ERROR,
    INITIAL_CONNECTION_WINDOW,
    INITIAL_MAX_STREAMS,
    INITIAL_STREAM_WINDOW,
    STREAM_LIMIT_ERROR,
    STREAM_QUANTUM,
    STREAM_SEND_BUFFER,
)
from tunnel.channel.events import (
    ChannelClosed,
    DatagramReceived,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
    StreamWritable,
)


def channel(is_client: bool, **options: float) -> Channel:
    """A channel with a seeded rng (BBR's probing phase), so every run is the same."""
    return Channel(is_client, rng=random.Random(7).randbytes, **options)  # type: ignore[arg-type]


LINK = LinkConfig(rate_bps=50e6, delay=0.01, queue_packets=200)


def pump(a: Channel, b: Channel, now: float, rounds: int = 400) -> float:
    """Shuttle packets directly between two channels, 1 ms a hop, no loss; fire timers that are
    due within a second. Returns the virtual time reached."""
    for _ in range(rounds):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for packet in src.packets_to_send(now):
                dst.receive_packet(packet, now)
                moved = True
        now += 0.001
        deadlines = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
        if not moved:
            if not deadlines or min(deadlines) > now + 1.0:
                return now
            now = max(now, min(deadlines))
        for channel in (a, b):
            deadline = channel.get_timer()
            if deadline is not None and deadline <= now:
                channel.handle_timer(now)
    return now


class SizeCheckedEndpoint(ChannelEndpoint):
    """Asserts that no packet ever exceeds the channel's packet budget."""

    def to_send(self, now: float) -> list[bytes]:
        packets = super().to_send(now)
        assert all(len(p) <= self.channel.max_packet_size for p in packets)
        return packets


def test_hundred_streams_at_once_each_intact() -> None:
    sim = Simulator(3)
    payload = random.Random(3).randbytes(100 * 20_000)
    sender, receiver = BulkApp(payload=payload, streams=100), BulkApp()
    a, b = channel(True), channel(False)
    lossy = LinkConfig(rate_bps=50e6, delay=0.01, loss=0.02, queue_packets=200)
    ia = sim.add(SizeCheckedEndpoint(a, sender))
    ib = sim.add(SizeCheckedEndpoint(b, receiver))
    sim.route(ia, sim.link(lossy), ib)
    sim.route(ib, sim.link(lossy), ia)
    sender.start(a)
    sim.start()
    sim.run(60.0, stop=lambda: len(receiver.finished) == 100)
    assert len(receiver.finished) == 100
    for i in range(100):
        expected = hashlib.sha256(payload[i * 20_000 : (i + 1) * 20_000]).digest()
        assert receiver.digest(2 * i) == expected, f"stream {2 * i}"
    assert a.stats().packets_lost > 0


@dataclass
class StalledReader:
    """Never reads: the peer must stop at our credit, and we must not buffer beyond it."""

    opened: list[int] = field(default_factory=list)

    def on_wake(self, channel: Channel, now: float) -> None:
        while (event := channel.next_event()) is not None:
            if isinstance(event, StreamOpened):
                self.opened.append(event.stream_id)


def test_slow_reader_bounds_memory_and_resumes() -> None:
    sim = Simulator(4)
    writer, reader = FlowApp(send=True), StalledReader()
    a, b, _, ib = channel_pair(sim, LINK, LINK, writer, reader)
    writer.on_wake(a, 0.0)
    sim.start()
    sim.run(5.0)
    # the reader holds no more than the credit it gave; the writer no more than its buffer
    assert 0 < b.buffered_bytes() <= INITIAL_STREAM_WINDOW
    assert a.buffered_bytes() <= STREAM_SEND_BUFFER
    sid = reader.opened[0]
    assert a.write(sid, b"x" * 1000) == 0  # backpressure reaches the application
    stalled_at = b.stats().stream_bytes_received
    sim.run(10.0)
    assert b.stats().stream_bytes_received == stalled_at  # nothing more while no one reads
    # the reader starts reading: credit flows again and the writer is told it may write
    reader_app = FlowApp()
    endpoint = sim.endpoints[ib]
    assert isinstance(endpoint, ChannelEndpoint)
    endpoint.app = reader_app
    while b.read(sid):
        pass
    sim.wake(ib)  # the shell sends after its application read
    sim.run(12.0)
    assert b.stats().stream_bytes_received > stalled_at + INITIAL_STREAM_WINDOW
    assert b.buffered_bytes() <= 4 * INITIAL_STREAM_WINDOW


def test_half_close_then_reply() -> None:
    a, b = channel(True), channel(False)
    sid = a.open_stream()
    a.write(sid, b"request")
    a.shutdown_write(sid)
    now = pump(a, b, 0.0)
    assert StreamOpened(sid) in events(b)
    assert b.read(sid) == b"request" and b.is_eof(sid)
    b.write(sid, b"response")  # the other direction is still open after the peer's FIN
    b.shutdown_write(sid)
    pump(a, b, now)
    assert StreamReadable(sid) in events(a)
    assert a.read(sid) == b"response" and a.is_eof(sid)
    assert a.stats().open_streams == 0 and b.stats().open_streams == 0  # both retired


def test_reset_stream_discards_and_frees_credit() -> None:
    a, b = channel(True), channel(False)
    sid = a.open_stream()
    a.write(sid, b"x" * 500_000)
    now = pump(a, b, 0.0)
    a.reset_stream(sid, 7)
    now = pump(a, b, now)
    assert StreamReset(sid, 7) in events(b)
    assert b.read(sid) == b""
    # the discarded bytes count as consumed: a second stream can use the whole window again
    other = a.open_stream()
    data = random.Random(1).randbytes(INITIAL_CONNECTION_WINDOW - 1000)
    assert a.write(other, data) == len(data)
    received = 0
    for _ in range(20):
        now = pump(a, b, now)
        while chunk := b.read(other):
            received += len(chunk)
    assert received == len(data)


def test_stop_reading_resets_the_peer() -> None:
    a, b = channel(True), channel(False)
    sid = a.open_stream()
    a.write(sid, b"y" * 10_000)
    now = pump(a, b, 0.0)
    events(b)
    b.stop_reading(sid, 9)
    pump(a, b, now)
    assert StreamStopped(sid, 9) in events(a)
    assert a.write(sid, b"more") == 0


def test_datagrams_unreliable_and_bounded() -> None:
    a, b = channel(True), channel(False)
    assert not a.send_datagram(b"z" * (a.max_datagram_size + 1))
    sent = [bytes([i]) * 100 for i in range(50)]
    assert all(a.send_datagram(d) for d in sent)
    pump(a, b, 0.0)
    got = [e.data for e in events(b) if isinstance(e, DatagramReceived)]
    assert got == sent
    while a.send_datagram(b"q"):
        pass  # the send queue is bounded: eventually refused


def test_loss_on_one_stream_does_not_stall_another() -> None:
    a2, b2 = channel(True), channel(False)
    s1, s2 = a2.open_stream(), a2.open_stream()
    a2.write(s1, b"A" * 2000)
    packets = a2.packets_to_send(0.0)
    a2.write(s2, b"B" * 500)
    packets += a2.packets_to_send(0.0)
    carrying_a = [p for p in packets if b"AAAA" in p]
    carrying_b = [p for p in packets if b"BBBB" in p and b"AAAA" not in p]
    assert carrying_a and carrying_b
    for packet in packets:
        if packet is not carrying_a[0]:  # the first packet of stream A is lost
            b2.receive_packet(packet, 0.01)
    assert b2.read(s2) == b"B" * 500  # B is delivered despite A's hole
    assert b2.read(s1) == b""  # A waits for its retransmission
    pump(a2, b2, 0.01)
    assert b2.read(s1) == b"A" * 2000


def test_stream_limits() -> None:
    a, b = channel(True, max_streams=4), channel(False, max_streams=4)
    pump(a, b, 0.0)
    # our own limit comes from the peer (INITIAL_MAX_STREAMS until it says otherwise)
    forged = fr.encode_packet(0, [fr.StreamFrame(2 * 10, 0, b"x", False)])  # client id 20
    b.receive_packet(forged, 0.0)
    closed = [e for e in events(b) if isinstance(e, ChannelClosed)]
    assert closed and closed[0].error_code == STREAM_LIMIT_ERROR
    c = channel(True)
    for _ in range(INITIAL_MAX_STREAMS):
        c.open_stream()
    try:
        c.open_stream()
    except ChannelError:
        pass
    else:
        raise AssertionError("opened beyond the peer's stream limit")


def test_finished_streams_raise_the_limit() -> None:
    a, b = channel(True, max_streams=3), channel(False, max_streams=3)
    now = 0.0
    for _round in range(4):
        for _ in range(3):
            sid = a.open_stream()
            a.write(sid, b"hi")
            a.shutdown_write(sid)
        now = pump(a, b, now)
        for event in events(b):
            if isinstance(event, StreamReadable):
                b.read(event.stream_id)
                b.shutdown_write(event.stream_id)
        now = pump(a, b, now)
        for event in events(a):
            if isinstance(event, StreamReadable):
                a.read(event.stream_id)
        now = pump(a, b, now)
    assert a._table.next_local_index == 12  # 4 x 3 streams opened with a limit of 3 at a time


def test_idle_timeout_closes() -> None:
    a = channel(True, idle_timeout=5.0)
    sid = a.open_stream()
    a.write(sid, b"hello")
    now = 0.0
    a.packets_to_send(now)  # the peer never answers
    for _ in range(100):
        deadline = a.get_timer()
        if deadline is None:
            break
        now = deadline
        a.handle_timer(now)
        a.packets_to_send(now)
    closed = [e for e in events(a) if isinstance(e, ChannelClosed)]
    assert closed and closed[0].reason == "idle timeout"
    assert a.is_closed and 5.0 <= now < 5.1


def test_flow_control_violation_closes_with_error() -> None:
    b = channel(False)
    frame = fr.StreamFrame(0, INITIAL_STREAM_WINDOW, b"x", False)  # one byte past the credit
    b.receive_packet(fr.encode_packet(0, [frame]), 0.0)
    closed = [e for e in events(b) if isinstance(e, ChannelClosed)]
    assert closed and closed[0].error_code == FLOW_CONTROL_ERROR


def test_final_size_violations_close_with_final_size_error() -> None:
    # A stream's final size, once known, never changes (RFC 9000 §4.5): not by a later FIN,
    # not by a reset below the bytes already received. (The compiled build once raised a
    # TypeError here instead of closing the channel.)
    fin_at_5 = fr.StreamFrame(0, 0, b"hello", True)
    violations: list[fr.Frame] = [
        fr.StreamFrame(0, 0, b"hello, world", True),  # final size changed
        fr.ResetStreamFrame(0, 7, 2),  # final size below received data
    ]
    for violation in violations:
        b = channel(False)
        b.receive_packet(fr.encode_packet(0, [fin_at_5]), 0.0)
        b.receive_packet(fr.encode_packet(1, [violation]), 0.0)
        closed = [e for e in events(b) if isinstance(e, ChannelClosed)]
        assert closed and closed[0].error_code == FINAL_SIZE_ERROR, violation
    packets = b.packets_to_send(0.0)
    decoded = fr.decode_packet(packets[0])
    assert decoded is not None and isinstance(decoded[1][0], fr.CloseFrame)


def test_writable_event_after_backpressure() -> None:
    # the send buffer holds max(stream_send_buffer, 2 x the peer's stream credit)
    a = channel(True, stream_send_buffer=10_000, stream_window=5_000)
    b = channel(False, stream_send_buffer=10_000, stream_window=5_000)
    sid = a.open_stream()
    assert a.write(sid, b"w" * 20_000) == 10_000
    received = b""
    now = 0.0
    for _ in range(10):  # the reader's 5 KB window needs it to read for the rest to come
        now = pump(a, b, now)
        received += b.read(sid)
    assert received == b"w" * 10_000
    assert StreamWritable(sid) in events(a)
    assert a.write(sid, b"w" * 5_000) == 5_000


def test_quiet_channel_stays_open_with_keepalive_pings() -> None:
    sim = Simulator(5)
    a, b, ia, _ = channel_pair(sim, LINK, LINK, StalledReader(), StalledReader())
    sid = a.open_stream()
    a.write(sid, b"hello")
    sim.start()
    sim.wake(ia)
    sim.run(300.0)  # ten idle timeouts of silence from the application
    assert a.is_open and b.is_open
    assert not [e for e in events(a) + events(b) if isinstance(e, ChannelClosed)]
    # a PING every 10 s or so each way, not a flood
    assert a.stats().packets_sent < 100 and b.stats().packets_sent < 100


def test_a_channel_that_never_carried_a_packet_pings_from_when_it_opened() -> None:
    # A tunnel up with no connection yet: without a PING its peer's death goes unnoticed.
    a = channel(True, idle_timeout=30.0, opened_at=100.0)
    assert a.get_timer() == 110.0  # a third of the idle timeout
    assert a.packets_to_send(109.0) == []
    a.handle_timer(110.0)
    [packet] = a.packets_to_send(110.0)
    decoded = fr.decode_packet(packet)
    assert decoded is not None and [type(f) for f in decoded[1]] == [fr.PingFrame]
    unanswered = a.get_timer()
    assert unanswered is not None and unanswered < 140.0  # a lost PING is followed up


def test_busy_streams_take_turns_of_a_quantum() -> None:
    """Streams with data send in turns of STREAM_QUANTUM bytes, not a packet each: the receiver
    then gets whole GSO trains of one stream and writes them to its socket in one call (8 bulk
    streams cut per packet made 10x the writes). Every stream still gets its turn."""
    a, b = channel(True), channel(False)
    sids = [a.open_stream() for _ in range(3)]
    for sid in sids:
        a.write(sid, bytes(256 * 1024))
    order: list[tuple[int, int]] = []  # (stream id, bytes) of every stream frame a sent
    now = 0.0
    for _ in range(2000):
        for packet in a.packets_to_send(now):
            decoded = fr.decode_packet(packet)
            assert decoded is not None
            order += [(f.stream_id, len(f.data)) for f in decoded[1]
                      if isinstance(f, fr.StreamFrame)]
            b.receive_packet(packet, now)
        for packet in b.packets_to_send(now):
            a.receive_packet(packet, now)
        for event in events(b):
            if isinstance(event, StreamReadable):
                b.read(event.stream_id)
        now += 0.0005
        for end in (a, b):
            if (deadline := end.get_timer()) is not None and deadline <= now:
                end.handle_timer(now)
        if sum(size for _, size in order) >= 3 * 256 * 1024:
            break
    runs: list[tuple[int, int]] = []  # consecutive bytes of one stream
    for sid, size in order:
        if runs and runs[-1][0] == sid:
            runs[-1] = (sid, runs[-1][1] + size)
        else:
            runs.append((sid, size))
    assert sum(size for _, size in runs) == 3 * 256 * 1024
    assert [sid for sid, _ in runs[:3]] == sids  # each stream's turn comes in order
    turns = [size for _, size in runs[:-3]]  # the last turns end with the stream's data
    assert len(turns) > 6
    assert all(STREAM_QUANTUM <= size < STREAM_QUANTUM + a.max_packet_size for size in turns), runs


def test_the_channel_bounds_what_its_streams_buffer_together() -> None:
    # Each stream alone may buffer 60 KB (2 x the peer's 30 KB credit); the channel holds at most
    # 100 KB for all of them.
    options = {"stream_send_buffer": 60_000, "stream_window": 30_000, "max_send_buffer": 100_000}
    a, b = channel(True, **options), channel(False, **options)
    first, second, third = a.open_stream(), a.open_stream(), a.open_stream()
    assert a.write(first, b"1" * 70_000) == 60_000
    assert a.write(second, b"2" * 60_000) == 40_000
    assert a.write(third, b"3" * 10_000) == 0
    assert a.writable_space(third) == 0
    now, received = 0.0, {first: b"", second: b"", third: b""}
    for _ in range(10):  # the readers' 30 KB windows need them to read for the rest to come
        now = pump(a, b, now)
        for sid in received:
            received[sid] += b.read(sid)
    assert received == {first: b"1" * 60_000, second: b"2" * 40_000, third: b""}
    # acknowledged: the streams held back hear they may write again, and can
    woken = {e.stream_id for e in events(a) if isinstance(e, StreamWritable)}
    assert woken == {first, second, third}
    assert a.write(third, b"3" * 10_000) == 10_000
    pump(a, b, now)
    assert b.read(third) == b"3" * 10_000


def test_many_streams_under_a_small_channel_bound_all_finish_intact() -> None:
    # 8 writers that only write when told they may (StreamWritable), sharing a bound far below
    # their own, over a lossy link: none may wait forever, and the bound holds throughout.
    sim = Simulator(11)
    payload = random.Random(11).randbytes(8 * 300_000)
    sender, receiver = BulkApp(payload=payload, streams=8), BulkApp()
    lossy = LinkConfig(rate_bps=50e6, delay=0.01, loss=0.02, queue_packets=200)
    a, _, _, _ = channel_pair(sim, lossy, lossy, sender, receiver, max_send_buffer=200_000)
    sender.start(a)
    sim.start()
    peak = 0

    def done() -> bool:
        nonlocal peak
        peak = max(peak, a.buffered_bytes())  # all send buffers: the receiver sends nothing
        return len(receiver.finished) == 8

    sim.run(60.0, stop=done)
    assert len(receiver.finished) == 8
    for i in range(8):
        expected = hashlib.sha256(payload[i * 300_000 : (i + 1) * 300_000]).digest()
        assert receiver.digest(2 * i) == expected, f"stream {2 * i}"
    assert 150_000 < peak <= 200_000
    sim.run(sim.now + 1.0)  # the last acknowledgements
    assert a.buffered_bytes() == 0
    assert a.writable_space(a.open_stream()) == 200_000  # every byte given back to the bound
    assert a.stats().packets_lost > 0


def test_a_reset_stream_gives_its_share_of_the_channel_bound_to_the_others() -> None:
    a = channel(True, stream_send_buffer=100_000, stream_window=50_000, max_send_buffer=100_000)
    hog, held = a.open_stream(), a.open_stream()
    assert a.write(hog, b"h" * 100_000) == 100_000
    assert a.write(held, b"w" * 1_000) == 0
    assert not [e for e in events(a) if isinstance(e, StreamWritable)]
    a.reset_stream(hog, 7)
    assert StreamWritable(held) in events(a)
    assert a.write(held, b"w" * 1_000) == 1_000
