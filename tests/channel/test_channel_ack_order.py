"""ACK frames are applied after the other frames of their packet (channel.py, "Settling
acknowledgements"): what a packet brings for a reader comes first, and whatever depends on the
acknowledgements still sees them."""

from __future__ import annotations

import random

from tests.support.channel_events import events
from tunnel.channel import frames as fr
from tunnel.channel.channel import Channel
from tunnel.channel.events import StreamOpened, StreamReadable, StreamWritable


def channel(is_client: bool, peer_stream_window: int | None = None) -> Channel:
    return Channel(is_client, rng=random.Random(7).randbytes, stream_send_buffer=1000,
                   peer_stream_window=peer_stream_window)


def test_a_reply_is_readable_before_the_space_its_acknowledgement_frees() -> None:
    # The client may send 400 bytes of a full buffer of 1,000; their acknowledgement frees room.
    # (The server's own window is larger: reading them asks no window update of it, so its
    # reply is an ACK frame and a STREAM frame.)
    client, server = channel(True, peer_stream_window=400), channel(False)
    sid = client.open_stream()
    assert client.write(sid, b"q" * 2000) == 1000
    for packet in client.packets_to_send(0.0):
        server.receive_packet(packet, 0.001)
    assert events(server) == [StreamOpened(sid), StreamReadable(sid)]
    assert server.read(sid) == b"q" * 400
    server.write(sid, b"reply")
    (reply,) = server.packets_to_send(0.001)
    assert isinstance(fr.decode_packet(reply)[1][0], fr.AckFrame)  # type: ignore[index]

    assert client.bytes_in_flight > 0  # nothing of the reply was applied yet
    client.receive_packet(reply, 0.002)
    # the ACK frame came first in the packet; its event comes after the reply's
    assert events(client) == [StreamReadable(sid), StreamWritable(sid)]
    assert client.read(sid) == b"reply"
    assert client.bytes_in_flight == 0
    assert client.stats().smoothed_rtt == 0.002  # the sample is taken at the arrival time
    assert client.write(sid, b"q" * 1000) == 400


def test_what_reads_the_sending_state_sees_every_acknowledgement_that_came() -> None:
    client = channel(True)
    sid = client.open_stream()
    client.write(sid, b"data")
    sent = client.packets_to_send(0.0)
    pto = client.get_timer()
    assert pto is not None and pto < 2.0  # the loss timer: no RTT sample yet, about 1 s
    client.receive_packet(fr.encode_packet(0, [fr.AckFrame(((0, len(sent) - 1),), 0)]), 0.01)
    timer = client.get_timer()
    assert timer is not None and timer > 2.0  # only the keepalive and idle timers remain
    assert client.bytes_in_flight == 0
    assert client.stats().bytes_in_flight == 0


def test_a_later_frame_sees_the_acknowledgements_before_it() -> None:
    """STOP_SENDING for a stream whose data and FIN an earlier packet acknowledged finds it done
    (nothing to reset), as when each frame is applied as it comes."""
    client = channel(True)
    sid = client.open_stream()
    client.write(sid, b"data")
    client.shutdown_write(sid)
    sent = client.packets_to_send(0.0)
    assert sent
    client.receive_packet(fr.encode_packet(0, [fr.AckFrame(((0, len(sent) - 1),), 0)]), 0.01)
    client.receive_packet(fr.encode_packet(1, [fr.StopSendingFrame(sid, 9)]), 0.01)
    assert events(client) == []  # no StreamStopped: the stream had sent everything
    packets = client.packets_to_send(0.02)
    assert all(not isinstance(frame, fr.ResetStreamFrame)
               for packet in packets
               for frame in fr.decode_packet(packet)[1])  # type: ignore[index]
