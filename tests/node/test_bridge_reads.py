"""A local TCP read goes into the bridge's read area, and a large one stays there as the stream's
bytes, with no copy (tunnel.forward.bridge: `get_buffer`, `buffer_updated`, `KEEP_MIN`).

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
from tunnel.forward.bridge import KEEP_MIN, READ_AREA, READ_ROOM, StreamBridge
from tunnel.node.udp import monotonic

SECRET = bytes(range(32))


def pattern(size: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


def send_stream(bridge: StreamBridge) -> SendStream:
    channel = bridge.channel()
    assert channel is not None and bridge.stream_id is not None
    return channel._streams[bridge.stream_id].send


def kept(bridge: StreamBridge) -> list[memoryview]:
    """The chunks of the stream's send buffer, oldest first."""
    buffer = send_stream(bridge)._buf
    return buffer._chunks[buffer._head:]


def new_bridge() -> StreamBridge:
    """A bridge on a new stream of a peer whose channel is open."""
    node = socketless_node(SECRET)
    _other, peer, _sent = linked(node, monotonic())
    return bridge_on(node, peer)


def test_large_reads_stay_in_the_area_and_later_reads_do_not_touch_them() -> None:
    async def scenario() -> None:
        bridge = new_bridge()
        first, second = pattern(KEEP_MIN, 1), pattern(40_000, 2)
        tcp_read(bridge, first)
        tcp_read(bridge, second)
        chunks = kept(bridge)
        assert [len(c) for c in chunks] == [len(first), len(second)]
        # both are views of one area, the buffer the reads went into: no copy was made
        assert isinstance(chunks[0].obj, bytearray) and chunks[0].obj is chunks[1].obj
        assert len(chunks[0].obj) == READ_AREA
        # the next read goes after them
        assert len(bridge.get_buffer(-1)) == READ_AREA - len(first) - len(second)
        tcp_read(bridge, pattern(KEEP_MIN, 3))
        assert bytes(send_stream(bridge)._buf.read(0, len(first) + len(second))) == first + second

    asyncio.run(scenario())


def test_a_nearly_full_area_is_followed_by_a_new_one() -> None:
    async def scenario() -> None:
        bridge = new_bridge()
        reads = [pattern(60_000, seed) for seed in range(5)]
        for data in reads[:3]:
            tcp_read(bridge, data)
        room = len(bridge.get_buffer(-1))  # 76,144 bytes left: still this area
        assert room == READ_AREA - 180_000 >= READ_ROOM
        tcp_read(bridge, reads[3])
        assert len(bridge.get_buffer(-1)) == READ_AREA  # 16,144 left was too little: a new one
        tcp_read(bridge, reads[4])
        chunks = kept(bridge)
        assert len({id(c.obj) for c in chunks}) == 2
        assert b"".join(bytes(c) for c in chunks) == b"".join(reads)

    asyncio.run(scenario())


def test_a_small_read_is_copied_and_leaves_no_area_behind() -> None:
    async def scenario() -> None:
        bridge = new_bridge()
        tcp_read(bridge, b"ls -l\n")
        chunk = kept(bridge)[-1]
        assert isinstance(chunk.obj, bytes) and bytes(chunk) == b"ls -l\n"
        assert bridge._area is None  # an interactive connection holds no 256 KiB between reads
        # after a large read, a small one is copied out and its room read into again
        tcp_read(bridge, pattern(KEEP_MIN, 4))
        room = len(bridge.get_buffer(-1))
        tcp_read(bridge, b"q")
        assert len(bridge.get_buffer(-1)) == room
        assert bytes(kept(bridge)[-1]) == b"q"

    asyncio.run(scenario())


def test_a_read_the_stream_takes_only_part_of_keeps_only_that_part() -> None:
    async def scenario() -> None:
        bridge = new_bridge()
        channel = bridge.channel()
        assert channel is not None and bridge.stream_id is not None
        space = channel.writable_space(bridge.stream_id)
        channel.write(bridge.stream_id, bytes(space - 10_000))  # 10,000 bytes of room left
        data = pattern(2 * KEEP_MIN, 6)
        tcp_read(bridge, data)
        assert len(kept(bridge)[-1]) == 10_000 and bytes(bridge.pending) == data[10_000:]
        # the rest was copied out: the area's next read goes right after the part kept
        assert len(bridge.get_buffer(-1)) == READ_AREA - 10_000

    asyncio.run(scenario())


def test_reads_before_the_stream_is_attached_are_copied() -> None:
    async def scenario() -> None:
        node = socketless_node(SECRET)
        _other, peer, _sent = linked(node, monotonic())
        bridge = StreamBridge(bridge_on(node, peer).forwarder)  # no stream yet
        early = pattern(KEEP_MIN * 2, 5)
        tcp_read(bridge, early)
        assert bytes(bridge.pending) == early
        assert len(bridge.get_buffer(-1)) == READ_AREA  # copied out: its room is read into again
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
