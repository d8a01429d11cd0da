"""The node's data path per readiness event: one drain of the socket and one flush, GRO buffers
opened in one call, payloads sealed in GSO runs, and only the peers that changed drained.

Real loopback sockets for the socket tests (no sleeps: the datagrams are queued before the
loop reads them); in-memory sessions for the rest.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from types import ModuleType

import pytest

from tests.support.datapaths import IMPLEMENTATIONS, udpio_module
from tests.support.socketless_node import handshake
from tunnel.addresses import Addr
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import handshake_psk
from tunnel.node.node import Node, NodeOptions
from tunnel.node.udp import SOL_UDP, UDP_GRO, UDP_SEGMENT, UdpEndpoint, monotonic
from tunnel.session.device import Device
from tunnel.session.session import Session

SECRET = bytes(range(32))
PEER_ADDR = ("127.0.0.1", 40002)
DATAGRAM = 1472


@pytest.fixture(params=IMPLEMENTATIONS)
def udpio(request: pytest.FixtureRequest) -> ModuleType:
    return udpio_module(request.param)


def _receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def test_recv_batch_reads_what_is_there_and_no_more(udpio: ModuleType) -> None:
    receiver, sender = _receiver(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        assert udpio.recv_batch(receiver, 32) == []  # empty: a list, not an exception
        sender.bind(("127.0.0.1", 0))
        for size in (1, 100, 1472, 0, 9000):
            sender.sendto(bytes([size % 251]) * size, receiver.getsockname())
        source = sender.getsockname()
        got = udpio.recv_batch(receiver, 3)
        assert [(len(d), a, s) for d, a, s in got] == [(1, source, 0), (100, source, 0),
                                                       (1472, source, 0)]
        rest = udpio.recv_batch(receiver, 32)
        assert [(len(d), a) for d, a, _ in rest] == [(0, source), (9000, source)]
        assert rest[1][0] == bytes([9000 % 251]) * 9000
        assert udpio.recv_batch(receiver, 32) == []


def test_recv_batch_reports_the_gro_segment_size(udpio: ModuleType) -> None:
    receiver, sender = _receiver(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.setsockopt(SOL_UDP, UDP_GRO, 1)
        data = b"".join(bytes([i]) * DATAGRAM for i in range(10)) + b"tail"
        try:
            sender.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", DATAGRAM))], 0,
                           receiver.getsockname())
        except OSError:
            pytest.skip("no UDP GSO here")
        got = b""
        for chunk, _, segment in udpio.recv_batch(receiver, 32):
            assert segment in (0, DATAGRAM)
            got += chunk
        assert got == data


def test_recv_batch_names_each_sender_within_and_across_calls(udpio: ModuleType) -> None:
    """The C twin keeps the last sender's address between calls: a new sender, or an old one
    again, still gets its own."""
    receiver = _receiver()
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    with receiver, senders[0], senders[1]:
        for sender in senders:
            sender.bind(("127.0.0.1", 0))
        a, b = (sender.getsockname() for sender in senders)
        for order in ([0], [1], [1], [0], [0, 1, 0, 0, 1]):
            for index in order:
                senders[index].sendto(bytes([index]), receiver.getsockname())
            got = udpio.recv_batch(receiver, 32)
            assert [(data, addr) for data, addr, _ in got] == [
                (bytes([index]), (a, b)[index]) for index in order]


def test_twins_read_alike() -> None:
    c_udpio, py_udpio = udpio_module("c"), udpio_module("python")
    results = []
    for module in (c_udpio, py_udpio):
        receiver, sender = _receiver(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with receiver, sender:
            sender.bind(("127.0.0.1", 0))
            for i in range(40):
                sender.sendto(bytes([i]) * (i * 37), receiver.getsockname())
            batches = [module.recv_batch(receiver, 32), module.recv_batch(receiver, 32)]
            results.append([[(d, s) for d, _, s in batch] for batch in batches])
    assert results[0] == results[1]
    assert [len(b) for b in results[0]] == [32, 8]


def test_one_readiness_event_is_one_drain_and_one_flush() -> None:
    """Many queued datagrams reach the owner in one reader callback, and `on_drained` runs once,
    after the last of them, inside that callback (not at some later turn of the loop)."""

    async def scenario() -> list[tuple[str, int]]:
        log: list[tuple[str, int]] = []
        received: list[bytes] = []
        endpoint = UdpEndpoint.bind(("127.0.0.1", 0),
                                    lambda data, addr, segment: received.append(data),
                                    lambda: log.append(("drained", len(received))))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for i in range(100):
                sender.sendto(bytes([i]) * 50, endpoint.local_addr)
            while not log:
                await asyncio.sleep(0)  # one loop turn at a time, until the reader ran
        endpoint.close()
        return log

    assert asyncio.run(scenario()) == [("drained", 100)]


# --- the node ----------------------------------------------------------------------------------


def _node_and_peer_device(now: float = 0.0) -> tuple[Node, Device, Session]:
    """A node with a session established at `now` to a bare device at PEER_ADDR."""
    node = Node(NodeOptions(identity=Identity.from_private(bytes([7]) * 32),
                            network_secret=SECRET, rendezvous=("127.0.0.1", 1)))
    other = Device(bytes([9]) * 32, handshake_psk(SECRET))
    session = handshake(node, other, PEER_ADDR, ("127.0.0.1", 40001), now)
    assert session.is_established
    return node, other, session


def test_payloads_go_out_in_gso_runs_as_large_as_a_send_carries() -> None:
    node, other, session = _node_and_peer_device()
    payloads = [bytes([i]) * (DATAGRAM - 32) for i in range(100)] + [b"short"]
    node._in_flush = True  # as in a flush, which is the only caller
    node._seal(session, [(p, PEER_ADDR) for p in payloads], 1.0)
    runs = node._runs
    # 65,000 // 1,472 = 44 datagrams a send; the shorter last payload rides in the last run.
    assert [(len(data), segment, addr) for data, segment, addr in runs] == [
        (44 * DATAGRAM, DATAGRAM, PEER_ADDR),
        (44 * DATAGRAM, DATAGRAM, PEER_ADDR),
        (12 * DATAGRAM + 37, DATAGRAM, PEER_ADDR),
    ]
    opened = []
    for data, segment, _addr in runs:
        opened += [p for s, p in other.receive_batch(data, segment, ("127.0.0.1", 40001), 1.0,
                                                     1.0) if s is not None]
    assert opened == payloads
    assert other.counters.replay == other.counters.bad_tag == 0


def test_runs_break_at_a_new_address_or_size() -> None:
    node, _other, session = _node_and_peer_device()
    other_addr: Addr = ("127.0.0.1", 40003)
    sizes_and_addrs = [(100, PEER_ADDR)] * 3 + [(100, other_addr)] * 2 + [(200, other_addr)] + [
        (50, PEER_ADDR)]
    node._in_flush = True  # as in a flush, which is the only caller
    node._seal(session, [(bytes(n), a) for n, a in sizes_and_addrs], 1.0)
    assert [(len(d), s, a) for d, s, a in node._runs] == [(3 * 132, 132, PEER_ADDR),
                                                         (2 * 132, 132, other_addr)]
    # Single datagrams take the ordinary path.
    assert {a: [len(d) for d in ds] for a, ds in node._outbox.items()} == {
        other_addr: [232], PEER_ADDR: [82]}


def test_a_flush_after_a_datagram_drains_only_that_peer() -> None:
    now = monotonic()  # the node reads its own clock
    node, other, session = _node_and_peer_device(now)

    async def scenario() -> list[bytes]:
        a = node._peer(other.public_key, now)
        b = node._peer(bytes([5]) * 32, now)
        assert a is not None and b is not None
        peers = (a, b)

        def mark() -> None:
            # A payload queued on each peer: a drain takes it (`datagrams_to_send`), so a
            # peer whose queue is empty afterwards was drained. (No monkeypatching: the node's
            # classes are compiled.)
            for peer in peers:
                peer._out.append((b"marker", PEER_ADDR))

        def drained() -> list[bytes]:
            return [peer.static for peer in peers if not peer._out]

        mark()
        node._flush()  # the first flush drains everyone
        assert sorted(drained()) == sorted([a.static, b.static])
        # A keepalive from `other` to the node: only its peer changed.
        mark()
        other_session = other.get_session(node.device.public_key)
        assert other_session is not None
        keepalive = other_session.seal(b"", now)
        assert keepalive is not None
        node._on_datagram(keepalive, PEER_ADDR, 0)
        node._on_drained()
        after_keepalive = drained()
        mark()
        node.kick()  # a forwarder acted: which peer is not known, so all of them
        node._flush()
        return [*after_keepalive, b"|", *sorted(drained())]

    everyone = sorted([other.public_key, bytes([5]) * 32])
    assert asyncio.run(scenario()) == [other.public_key, b"|", *everyone]
    assert session.is_established
