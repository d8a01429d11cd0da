"""A local TCP read goes into a fresh read area, and a read that fills it is kept by the stream
as it is, with no copy (tunnel.forward.bridge: `get_buffer`, `buffer_updated`, `READ_AREA`).

Socketless nodes: what the node sends lands on an in-memory wire and nothing acknowledges it, so
the stream's send buffer keeps every byte read, as it does until the peer's ACK.
"""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest

from tests.support.datapaths import IMPLEMENTATIONS, udpio_module
from tests.support.socketless_node import bridge_on, linked, socketless_node, tcp_read
from tunnel.channel.stream import SendStream
from tunnel.forward.bridge import READ_AREA, StreamBridge
from tunnel.node.udp import monotonic

SECRET = bytes(range(32))


def pattern(size: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


def new_bridge() -> StreamBridge:
    """A bridge on a new stream of a peer whose channel is open."""
    node = socketless_node(SECRET)
    _other, peer, _sent = linked(node, monotonic())
    return bridge_on(node, peer)


def send_stream(bridge: StreamBridge) -> SendStream:
    channel = bridge.channel()
    assert channel is not None and bridge.stream_id is not None
    return channel._streams[bridge.stream_id].send


def kept(bridge: StreamBridge) -> list[memoryview]:
    """The chunks of the stream's send buffer, oldest first."""
    buffer = send_stream(bridge)._buf
    return buffer._chunks[buffer._head:]


def test_a_full_read_is_kept_as_it_is_and_the_next_read_gets_a_fresh_area() -> None:
    async def scenario() -> None:
        bridge = new_bridge()
        first, second = pattern(READ_AREA, 1), pattern(READ_AREA, 2)
        area = bridge.get_buffer(-1)
        assert len(area) == READ_AREA
        tcp_read(bridge, first)
        assert bridge.get_buffer(-1).obj is not area.obj  # not the area the stream keeps
        tcp_read(bridge, second)
        chunks = kept(bridge)
        assert [len(c) for c in chunks] == [READ_AREA, READ_AREA]
        # each chunk is the very buffer its read went into: no copy was made
        assert chunks[0].obj is area.obj and chunks[1].obj is not area.obj
        assert all(isinstance(c.obj, bytearray) for c in chunks)
        tcp_read(bridge, pattern(100, 3))
        assert bytes(send_stream(bridge)._buf.read(0, 2 * READ_AREA)) == first + second

    asyncio.run(scenario())


def test_any_other_read_is_copied_and_leaves_no_area_behind() -> None:
    async def scenario() -> None:
        bridge = new_bridge()
        for data in (b"ls -l\n", pattern(READ_AREA - 1, 4)):  # a keystroke; a burst's last read
            tcp_read(bridge, data)
            chunk = kept(bridge)[-1]
            assert isinstance(chunk.obj, bytes) and bytes(chunk) == data
            assert bridge._area is None  # a quiet connection holds no 256 KiB between reads

    asyncio.run(scenario())


def test_a_full_read_the_stream_takes_part_of_keeps_that_part_and_copies_the_rest() -> None:
    async def scenario() -> None:
        bridge = new_bridge()
        channel = bridge.channel()
        assert channel is not None and bridge.stream_id is not None
        space = channel.writable_space(bridge.stream_id)
        channel.write(bridge.stream_id, bytes(space - 10_000))  # 10,000 bytes of room left
        data = pattern(READ_AREA, 6)
        tcp_read(bridge, data)
        chunk = kept(bridge)[-1]
        assert bytes(chunk) == data[:10_000] and isinstance(chunk.obj, bytearray)
        assert bytes(bridge.pending) == data[10_000:]

    asyncio.run(scenario())


def test_reads_before_the_stream_is_attached_are_copied() -> None:
    async def scenario() -> None:
        node = socketless_node(SECRET)
        _other, peer, _sent = linked(node, monotonic())
        bridge = StreamBridge(bridge_on(node, peer).forwarder)  # no stream yet
        early = pattern(READ_AREA, 5)
        tcp_read(bridge, early)
        assert bytes(bridge.pending) == early
        assert peer.channel is not None
        bridge.attach(peer, peer.channel.open_stream())
        assert bytes(send_stream(bridge)._buf.read(0, len(early))) == early

    asyncio.run(scenario())


@pytest.fixture(params=IMPLEMENTATIONS)
def udpio(request: pytest.FixtureRequest) -> ModuleType:
    return udpio_module(request.param)


def test_fresh_buffer_is_a_writable_buffer_of_the_size_asked(udpio: ModuleType) -> None:
    for size in (0, 1, 4096, READ_AREA):
        buffer = udpio.fresh_buffer(size)
        assert isinstance(buffer, bytearray) and len(buffer) == size
        memoryview(buffer)[:] = b"\x07" * size
        assert buffer == b"\x07" * size
    with pytest.raises(ValueError, match="negative"):
        udpio.fresh_buffer(-1)
    with pytest.raises(TypeError):
        udpio.fresh_buffer("1")
