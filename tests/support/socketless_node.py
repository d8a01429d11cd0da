"""A `Node` without a socket: what it sends lands on an in-memory `Wire`, and tests hand it
datagrams from in-memory `Device`s (real handshakes, no UDP)."""

from __future__ import annotations

from tunnel.addresses import Addr
from tunnel.forward.bridge import StreamBridge
from tunnel.forward.forwarder import Forwarder
from tunnel.keys.identity import Identity
from tunnel.keys.netkeys import handshake_psk
from tunnel.node.node import Node, NodeOptions
from tunnel.node.peer import Peer
from tunnel.node.udp import monotonic
from tunnel.session.constants import MAX_SESSIONS
from tunnel.session.device import Device
from tunnel.session.session import Session

NODE_ADDR: Addr = ("10.0.0.1", 7001)  # where the devices believe the node is
OTHER_ADDR: Addr = ("10.0.0.2", 7002)  # where the node's first peer device is


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Addr]] = []

    def send_batch(self, datagrams: list[bytes], addr: Addr) -> None:
        self.sent.extend((data, addr) for data in datagrams)

    def send_segments(self, data: bytes, segment: int, addr: Addr) -> None:
        """A GSO run: the datagrams it carries, one by one."""
        self.sent.extend((data[i:i + segment], addr) for i in range(0, len(data), segment))

    def close(self) -> None:
        pass


def socketless_node(secret: bytes, max_peers: int = MAX_SESSIONS) -> Node:
    """A node of the network `secret` on a `Wire` (its rendezvous is never reached)."""
    node = Node(NodeOptions(identity=Identity.generate(), network_secret=secret,
                            rendezvous=("127.0.0.1", 9), max_peers=max_peers))
    node.udp = Wire()
    return node


def to_node(node: Node, device: Device, addr: Addr) -> None:
    """What `device` has to send reaches the node from `addr`, and the node answers."""
    for data, _ in device.datagrams_to_send():
        node._receive_session(data, addr, monotonic())
    node._flush()


def replies(node: Node, addr: Addr) -> list[bytes]:
    """What the node sent toward `addr` since the last call; the wire is cleared."""
    wire = node.udp
    assert isinstance(wire, Wire)
    sent = [data for data, dst in wire.sent if dst == addr]
    wire.sent.clear()
    return sent


def handshake(node: Node, other: Device, other_addr: Addr, node_addr: Addr,
              now: float) -> Session:
    """`node` opens a session with `other` (at `other_addr`, seeing the node at `node_addr`),
    and the whole handshake crosses in memory at `now`; the node's session."""
    session = node.device.connect(other.public_key, [other_addr], now, now)
    for _ in range(2):
        for data, _addr in node.device.datagrams_to_send():
            other.receive_datagram(data, node_addr, now, now)
        other.handle_timer(now, now)
        for data, _addr in other.datagrams_to_send():
            node.device.receive_datagram(data, other_addr, now, now)
        node.device.handle_timer(now, now)
    for data, _addr in node.device.datagrams_to_send():
        other.receive_datagram(data, node_addr, now, now)
    return session


def linked(node: Node, now: float, addr: Addr = OTHER_ADDR) -> tuple[Device, Peer, list[bytes]]:
    """A device at `addr` with an established session to `node` (which initiated it at
    `now`), the node's peer for it with its channel open, and what the node sent to the device
    meanwhile (taken off the wire). The device is of the node's network."""
    other = Device(Identity.generate().private, handshake_psk(node.options.network_secret))
    handshake(node, other, addr, NODE_ADDR, now)
    node._flush()  # the handshake's completion makes the peer and opens its channel
    peer = node.peers[other.public_key]
    assert peer.channel is not None and peer.send_addr() == addr
    return other, peer, replies(node, addr)


def bridge_on(node: Node, peer: Peer) -> StreamBridge:
    """A bridge on a new stream of `peer`'s channel, as a local connection gets one."""
    assert peer.channel is not None
    bridge = StreamBridge(Forwarder(node))
    bridge.attach(peer, peer.channel.open_stream())
    return bridge


def tcp_read(bridge: StreamBridge, data: bytes) -> None:
    """A read of the bridge's local socket, as asyncio makes it: into the bridge's buffer."""
    buffer = bridge.get_buffer(-1)
    buffer[: len(data)] = data
    bridge.buffer_updated(len(data))
