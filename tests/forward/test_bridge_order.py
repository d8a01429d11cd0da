"""A bridge's bytes reach the local service in stream order, however the event loop interleaves
the dial with the stream's later data.

The exposing side reads the service name (and whatever came with it) before it dials the
service. Once the connection exists, the stream's next bytes and its FIN may be delivered to the
bridge before the dialling coroutine resumes: the soak found the early bytes written after the
FIN ("Cannot call write() after write_eof()") and the connection answered empty. The early bytes
now go out in `connection_made`, ahead of anything else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from tests.support.bare_peer import bare_peer
from tests.support.socketless_node import socketless_node
from tunnel.channel.channel import Channel
from tunnel.forward.bridge import StreamBridge
from tunnel.forward.sockets import SocketBudget
from tunnel.node.node import Node


@dataclass
class FakeOwner:
    node: Node = field(default_factory=lambda: socketless_node(bytes(32)))
    bridges: dict[tuple[bytes, int], StreamBridge] = field(default_factory=dict)
    sockets: SocketBudget = field(default_factory=lambda: SocketBudget(1024))


class RecordingTransport:
    """What the local service receives, in order: bytes, then b"<EOF>"."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.eof = False

    def write(self, data: bytes) -> None:
        if self.eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        self.received.append(bytes(data))

    def writelines(self, chunks: list[bytes | memoryview]) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self.eof = True
        self.received.append(b"<EOF>")

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


def test_early_bytes_go_first_when_the_stream_and_its_fin_arrive_before_the_dial_resumes(
) -> None:
    async def scenario() -> list[bytes]:
        # The peer's channel holds the stream's next bytes and its FIN, already arrived.
        sender, channel = Channel(True), Channel(False)
        stream_id = sender.open_stream()
        sender.write(stream_id, b" / HTTP/1.0\r\n\r\n")
        sender.shutdown_write(stream_id)
        for packet in sender.packets_to_send(0.0):
            channel.receive_packet(packet, 0.0)
        bridge = StreamBridge(cast(Any, FakeOwner()))
        bridge.attach(bare_peer(b"\x01" * 32, channel), stream_id)
        bridge.early = b"GET"  # read with the service's name, before the dial
        tcp = RecordingTransport()
        bridge.connection_made(cast(asyncio.Transport, tcp))
        bridge.on_readable()  # the stream's next bytes and FIN, delivered before `_dial` resumes
        assert bridge.early == b""
        return tcp.received

    # (in a running loop: the bridge asks the node to flush, which schedules it)
    assert asyncio.run(scenario()) == [b"GET", b" / HTTP/1.0\r\n\r\n", b"<EOF>"]
