"""Two peers built with different limits, each sending within the other's (sans-IO, virtual time).

A keeps the defaults; B announces a small stream window, a small connection window, two streams
and 1,400-byte datagrams. The link carries 9,000-byte datagrams. Each side reads the other's
transport parameters where the node would (from the session, `Peer.session_params`).
"""

from __future__ import annotations

from tests.node.test_peer import A_ADDR, A_KEY, B_ADDR, B_KEY, Pair, make_peer
from tunnel.channel.events import ChannelClosed
from tunnel.node.peer import channel_budget
from tunnel.path.pmtu import BASE_SIZE, PROBE_SIZES, PathMtu
from tunnel.session.params import TransportParams

A_PARAMS = TransportParams()  # 2 MiB / 3 MiB windows, 4,096 streams, 65,507-byte datagrams
B_PARAMS = TransportParams(stream_window=64 * 1024, connection_window=96 * 1024, max_streams=2,
                           max_datagram=1400)
MIB = 1024 * 1024


def differing_pair() -> Pair:
    a = make_peer(B_KEY, A_KEY, 1, params=A_PARAMS, session_params=lambda: B_PARAMS)
    b = make_peer(A_KEY, B_KEY, 2, params=B_PARAMS, session_params=lambda: A_PARAMS)
    pair = Pair(a, b, mtu=9000)
    a.on_introduced(B_ADDR, [], "b-name", 0.0)
    b.on_introduced(A_ADDR, [], None, 0.0)
    a.on_handshake_completed(B_ADDR, 0.0)
    b.on_handshake_completed(A_ADDR, 0.0)
    pair.run(0.5)
    return pair


def closed(pair: Pair) -> list[ChannelClosed]:
    return [e for side in ("a", "b") for e in pair.channel_events[side]
            if isinstance(e, ChannelClosed)]


def test_each_side_sends_within_the_others_stream_window() -> None:
    pair = differing_pair()
    a, b = pair.a.channel, pair.b.channel
    assert a is not None and b is not None
    to_b, to_a = a.open_stream(), b.open_stream()
    a.write(to_b, bytes(MIB))
    b.write(to_a, bytes(MIB))
    pair.run(3.0)  # nobody reads
    # A stops at B's 64 KiB; B sends all of its MiB, far past its own window, into A's 2 MiB.
    assert a.stats().stream_bytes_sent == 64 * 1024
    assert b.stats().stream_bytes_sent == MIB
    assert not closed(pair) and a.is_open and b.is_open
    assert len(b.read(to_b)) == 64 * 1024  # reading frees credit: the rest follows
    pair.run(3.0)
    assert a.stats().stream_bytes_sent > 64 * 1024 and not closed(pair)


def test_the_connection_window_bounds_all_streams_together() -> None:
    pair = differing_pair()
    a = pair.a.channel
    assert a is not None
    for _ in range(2):
        a.write(a.open_stream(), bytes(MIB))
    pair.run(3.0)
    assert a.stats().stream_bytes_sent == 96 * 1024  # B's connection window, not 2 x 64 KiB
    assert not closed(pair)


def test_each_side_opens_no_more_streams_than_the_other_allows() -> None:
    pair = differing_pair()
    a, b = pair.a.channel, pair.b.channel
    assert a is not None and b is not None
    opened = []
    while a.can_open_stream():
        opened.append(a.open_stream())
        a.write(opened[-1], b"x")
    assert len(opened) == 2  # B's limit
    for _ in range(10):  # B may open more than its own limit of two: A allows 4,096
        b.write(b.open_stream(), b"y")
    pair.run(1.0)
    assert not closed(pair) and a.is_open and b.is_open


def test_datagrams_never_exceed_what_the_receiver_reads() -> None:
    pair = differing_pair()
    a, b = pair.a.channel, pair.b.channel
    assert a is not None and b is not None
    a.write(a.open_stream(), bytes(32 * 1024))
    b.write(b.open_stream(), bytes(MIB))
    pair.run(3.0)
    # A probes B's path only up to B's 1,400 bytes; B probes A's up to what the link carries.
    assert pair.a.mtu.size == 1400
    assert a.max_packet_size == channel_budget(1400, relayed=False)
    assert pair.b.mtu.size == 8972 in PROBE_SIZES
    assert b.max_packet_size == channel_budget(8972, relayed=False)


def test_path_mtu_probes_no_size_past_the_limit() -> None:
    mtu = PathMtu()
    mtu.set_limit(4000)
    mtu.restart(0.0)
    assert mtu.pending == [4000, 1472]
    mtu.size = 8972  # a path proved larger before the limit was known
    mtu.set_limit(1400)
    assert mtu.size == 1400 and mtu.pending == []
    mtu.set_limit(100)  # never below the base size every path carries
    assert mtu.limit == BASE_SIZE


def test_a_limit_learnt_while_probing_caps_the_sizes_left() -> None:
    mtu = PathMtu()
    mtu.restart(0.0)  # the path changed before the handshake told the peer's limit
    assert mtu.probe_due(0.0) == 65000
    mtu.set_limit(4000)
    assert mtu.pending == [4000, 1472]
    assert not mtu.on_probe_answered(65000)  # the probe in flight cannot raise the size
    assert mtu.size == BASE_SIZE
