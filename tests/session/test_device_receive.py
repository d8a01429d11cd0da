"""The node's entry points: `Device.receive` for every session datagram, `wire.is_initiation`.

`receive` must behave exactly as the node's former dispatch did: transport data through
`receive_transport` (returned, no event), everything else through `receive_datagram`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.support.session_harness import (
    INITIATION_SIZE,
    NETWORK_SECRET_PSK,
    WALL_EPOCH,
    Net,
    SeededRng,
    Sent,
    drain_events,
    make_device,
)
from tunnel.addresses import Addr
from tunnel.session.cookie import CookieChecker
from tunnel.session.device import Device
from tunnel.session.events import HandshakeCompleted, PayloadReceived
from tunnel.session.session import Session
from tunnel.session.wire import (
    HEADER_RESPONSE,
    HEADER_TRANSPORT,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    is_initiation,
)

A_ADDR = ("10.0.0.1", 40001)
B_ADDR = ("10.0.0.2", 51820)


@dataclass
class ReceiveNet(Net):
    """`Net`, delivering through `Device.receive` as the node does; returned payloads are kept."""

    received: list[tuple[Device, Session, bytes]] = field(default_factory=list)

    def deliver(self, sent: Sent, src: Addr | None = None) -> None:
        device = self.devices.get(sent.dst)
        if device is None:
            return
        result = device.receive(sent.data, src or sent.src, self.now, WALL_EPOCH + self.now)
        if result is not None:
            self.received.append((device, *result))


def connected(net: Net) -> tuple[Device, Device, Session, Session]:
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    a.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH + net.now)
    net.settle()
    a_session, b_session = a.get_session(b.public_key), b.get_session(a.public_key)
    assert a_session is not None and a_session.is_established
    assert b_session is not None and b_session.is_established
    return a, b, a_session, b_session


def test_a_handshake_over_receive_alone_completes() -> None:
    net = ReceiveNet()
    a, b, _, b_session = connected(net)
    assert [type(e) for e in drain_events(a)] == [HandshakeCompleted]
    assert [type(e) for e in drain_events(b)] == [HandshakeCompleted]
    # The initiator's keepalive confirmed the keys: returned to the shell as an empty payload.
    assert net.received == [(b, b_session, b"")]


def test_transport_is_returned_and_queues_no_event() -> None:
    net = ReceiveNet()
    _, b, a_session, b_session = connected(net)
    drain_events(b)
    datagram = a_session.seal(b"hello", net.now)
    assert datagram is not None
    assert b.receive(datagram, A_ADDR, net.now, WALL_EPOCH + net.now) == (b_session, b"hello")
    assert b.next_event() is None
    # The same datagram again is a replay, dropped and counted as `receive_transport` does.
    assert b.receive(datagram, A_ADDR, net.now, WALL_EPOCH + net.now) is None
    assert b.counters.replay == 1


def test_receive_and_receive_datagram_produce_the_same_bytes() -> None:
    """Two seeded worlds, one fed through `receive`, one through `receive_datagram`: identical."""
    worlds = (ReceiveNet(), Net())
    sent: list[list[bytes]] = []
    payloads: list[list[bytes]] = []
    for net in worlds:
        a, b, a_session, b_session = connected(net)
        for i in range(50):
            a_session.send(b"a%d" % i, net.now)
            b_session.send(b"b%d" % i, net.now)
            net.now += 1.0
            net.settle()
        net.advance(200.0)  # past a rekey and the keepalive timers
        sent.append([s.data for s in net.captured])
        if isinstance(net, ReceiveNet):
            payloads.append([p for _, _, p in net.received if p])
        else:
            payloads.append(
                [e.data for d in (a, b) for e in drain_events(d) if isinstance(e, PayloadReceived)]
            )
    assert sent[0] == sent[1]
    assert sorted(payloads[0]) == sorted(payloads[1])
    assert len(payloads[0]) == 100


def test_handshake_messages_return_none_and_are_queued() -> None:
    a, b = make_device(1), make_device(2)
    a.connect(b.public_key, [B_ADDR], 0.0, WALL_EPOCH)
    ((initiation, _),) = a.datagrams_to_send()
    assert b.receive(initiation, A_ADDR, 0.0, WALL_EPOCH) is None
    assert b.pending_handshakes == 1 and b.datagrams_to_send() == []
    b.handle_timer(0.0, WALL_EPOCH)
    ((response, addr),) = b.datagrams_to_send()
    assert addr == A_ADDR and response[0] == MESSAGE_RESPONSE
    assert a.receive(response, B_ADDR, 0.0, WALL_EPOCH) is None
    a.handle_timer(0.0, WALL_EPOCH)
    assert [type(e) for e in drain_events(a)] == [HandshakeCompleted]


def test_cookie_reply_returns_none_and_is_consumed() -> None:
    a, b = make_device(1), make_device(2)
    a.connect(b.public_key, [B_ADDR], 0.0, WALL_EPOCH)
    ((initiation, _),) = a.datagrams_to_send()
    checker = CookieChecker(b.public_key, NETWORK_SECRET_PSK, SeededRng(9))
    reply = checker.create_reply(initiation, initiation[4:8], A_ADDR, 0.0)
    assert reply[0] == MESSAGE_COOKIE_REPLY
    assert a.receive(reply, B_ADDR, 0.0, WALL_EPOCH) is None
    assert a.counters.cookie_received == 1


def test_garbage_returns_none_and_is_counted() -> None:
    device = make_device(1)
    assert device.receive(b"", A_ADDR, 0.0, WALL_EPOCH) is None
    assert device.counters.malformed == 1
    assert device.receive(bytes([0x20]) + bytes(40), A_ADDR, 0.0, WALL_EPOCH) is None
    assert device.counters.not_ours == 1
    assert device.receive(HEADER_TRANSPORT + bytes(8), A_ADDR, 0.0, WALL_EPOCH) is None
    assert device.counters.malformed == 2  # shorter than a keepalive
    assert device.receive(HEADER_TRANSPORT + bytes(60), A_ADDR, 0.0, WALL_EPOCH) is None
    assert device.counters.unknown_index == 1
    assert device.receive(HEADER_RESPONSE + bytes(4), A_ADDR, 0.0, WALL_EPOCH) is None
    assert device.counters.malformed == 3
    assert device.datagrams_to_send() == [] and device.next_event() is None


def test_transport_leaves_the_wall_clock_alone_and_the_rest_refreshes_it() -> None:
    """The hot path does no wall-clock arithmetic (as `receive_transport` never did)."""
    net = ReceiveNet()
    _, b, a_session, _ = connected(net)
    before = b.wall_time(net.now)
    datagram = a_session.seal(b"x", net.now)
    assert datagram is not None
    assert b.receive(datagram, A_ADDR, net.now, 0.0) is not None
    assert b.wall_time(net.now) == before
    b.receive(b"\x20", A_ADDR, net.now, WALL_EPOCH + 1000.0)
    assert b.wall_time(net.now) == WALL_EPOCH + 1000.0


def test_is_initiation_names_exactly_the_initiations() -> None:
    net = Net()
    connected(net)
    net.advance(200.0)  # a rekey: initiations from both timers and data
    kinds = {s.data[0] for s in net.captured}
    assert {MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT} <= kinds
    for sent in net.captured:
        assert is_initiation(sent.data) == (sent.data[0] == MESSAGE_INITIATION)
    assert not is_initiation(b"")
    assert not is_initiation(bytes([MESSAGE_INITIATION]))  # right type, wrong size
    assert is_initiation(bytes([MESSAGE_INITIATION]) + bytes(INITIATION_SIZE - 1))
