"""One local TCP connection joined to one channel stream, both ways, with backpressure.

Bytes flow with backpressure both ways: when the channel's send buffer is full the TCP socket
stops being read, and when the local socket's write buffer is full the stream stops being read (so
the peer's flow-control credit stops growing). Half-close maps to FIN and back
(`shutdown(SHUT_WR)` on one end reaches the other end as EOF while the reply keeps flowing); an
abort (RST) on one end resets the stream and aborts the other end.

A TCP read goes straight into a fresh read area of `READ_AREA` bytes (`get_buffer`/
`buffer_updated`, asyncio's buffered protocol). A read that fills the area, as the reads of a bulk
transfer do, hands the whole area to the stream, which keeps it without a copy until the peer
acknowledges it: uvloop's plain protocol copied every read into a new bytes object, 12 % of a
bulk sender's CPU with 65,000-byte datagrams. Any other read (the last of a burst, an interactive
connection's few bytes) is copied out and the area dropped, so a kept area is never partly empty
and a connection holds no area between its reads.

The same bridge serves both sides: the connecting side creates it for an accepted local
connection and attaches a stream it opened; the exposing side (`tunnel.forward.exposing`) creates
it for a stream a peer opened and then dials the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Final, Protocol, cast

from tunnel.channel.channel import Channel
from tunnel.forward import wire
from tunnel.forward.sockets import SocketBudget
from tunnel.node.node import Node
from tunnel.node.peer import Peer
from tunnel.node.udp import monotonic
from tunnel.node.udpio import fresh_buffer

log = logging.getLogger(__name__)

READ_CHUNK: Final = 256 * 1024  # bytes taken from a stream per read
READ_AREA: Final = 256 * 1024  # bytes of a read of the local socket (uvloop's own read size)
# Bytes in front of a read area: the C data plane writes a packet's headers there to seal the
# area's first frame without joining them to its data (`_datapath.c`, `seal_large`).
AREA_LEAD: Final = 512
TCP_WRITE_HIGH_WATER: Final = 1024 * 1024  # bytes buffered toward a local socket before pausing


class BridgeOwner(Protocol):
    """What a bridge needs from the forwarder that routes its stream's events to it."""

    node: Node  # kicked whenever the bridge gave the channel something to send
    bridges: dict[tuple[bytes, int], StreamBridge]  # (peer static key, stream id) -> bridge
    sockets: SocketBudget  # the local socket of each bridge counts against it


def reset_tcp(transport: asyncio.Transport) -> None:
    """End a local TCP connection with a reset (RST), as the far end's crash would: a plain
    abort sends FIN when nothing is left unread, which the application takes for a complete
    answer, and a cut tunnel must never look like one."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class StreamBridge(asyncio.BufferedProtocol):
    """One local TCP connection joined to one channel stream."""

    def __init__(self, forwarder: BridgeOwner) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport | None = None
        self.link: Peer | None = None
        self.stream_id: int | None = None
        self._attached_to: Channel | None = None  # the channel `stream_id` belongs to
        self.pending = bytearray()  # from TCP, not yet taken by the stream
        self._area: memoryview | None = None  # where the next TCP read goes (module docstring)
        # From the stream, read before the local connection existed (the exposing side reads the
        # service's name first): written the moment it connects, ahead of anything else.
        self.early = b""
        self.tcp_eof = False  # the local side shut down its writing half
        self.fin_sent = False
        self.stream_eof = False  # the peer's FIN was passed on to the local side
        self.paused_writing = False
        self.closed = False
        self.holds_socket = False  # counted in the forwarder's socket budget
        self.on_attach: Callable[[StreamBridge], None] | None = None

    # --- joining a stream ---------------------------------------------------------------------

    def attach(self, link: Peer, stream_id: int, first: bytes = b"") -> None:
        self.link, self.stream_id = link, stream_id
        self._attached_to = link.channel
        self.forwarder.bridges[(link.static, stream_id)] = self
        if first:
            self.pending[:0] = first
        self._flush_pending()
        if self.transport is not None and not self.pending:
            self.transport.resume_reading()
        self.on_readable()

    # --- the local TCP side -------------------------------------------------------------------

    def take_socket(self, what: str) -> bool:
        """Count this bridge's local socket in the budget; False (nothing taken) past it."""
        if not self.holds_socket:
            self.holds_socket = self.forwarder.sockets.acquire(monotonic(), what)
        return self.holds_socket

    def release_socket(self) -> None:
        if self.holds_socket:
            self.holds_socket = False
            self.forwarder.sockets.release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: cast, don't check.
        tcp = self.transport = cast(asyncio.Transport, transport)
        if self.closed:
            reset_tcp(tcp)  # its stream ended while the service was being dialled
            return
        if not self.take_socket("a local connection"):  # accepted past the budget
            self.closed = True
            reset_tcp(tcp)
            return
        tcp.set_write_buffer_limits(high=TCP_WRITE_HIGH_WATER)
        if self.early:
            # Now, in connection_made: the stream's next bytes (and its FIN) may be delivered to
            # `on_readable` before the dialling coroutine resumes, and must follow these.
            tcp.write(self.early)
            self.early = b""
        if self.stream_id is None:
            tcp.pause_reading()  # until a stream is attached
        if self.on_attach is not None:
            self.on_attach(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """A fresh read area, for uvloop to read the local socket into."""
        if self._area is None:
            self._area = memoryview(fresh_buffer(AREA_LEAD + READ_AREA))[AREA_LEAD:]
        return self._area

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were read into the area."""
        area, self._area = self._area, None  # the next read gets a fresh one
        if area is None:  # asyncio reads only into a buffer it got from get_buffer
            raise RuntimeError("a read reported without a read buffer")
        if nbytes == len(area):
            self._from_tcp(area, True)  # the stream's now: whatever it took, it keeps uncopied
        else:
            self._from_tcp(bytes(area[:nbytes]), False)

    def _from_tcp(self, data: bytes | memoryview, owned: bool) -> None:
        """Bytes read from the local socket (`owned`: an area that the stream may keep); what the
        stream does not take waits in `pending`, a copy."""
        if self.pending or self.stream_id is None:
            self.pending += data
        else:
            channel = self.channel()
            taken = channel.write(self.stream_id, data, owned) if channel is not None else 0
            if taken < len(data):
                self.pending += data[taken:]
        if self.pending and self.transport is not None:
            self.transport.pause_reading()
        if self.link is not None:
            self.forwarder.node.flush_now(self.link)  # in this callback: no loop-turn hop

    def eof_received(self) -> bool:
        self.tcp_eof = True
        self._maybe_fin()
        self._maybe_close()
        return True  # keep the writing half open: the reply may still be coming (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.release_socket()
        self._area = None
        if self.closed:
            return
        self.closed = True
        channel = self.channel()
        if channel is not None and self.stream_id is not None:
            if exc is not None or not self.tcp_eof:
                # An abort (or a close before our FIN went out): abort the peer's end too.
                channel.reset_stream(self.stream_id, wire.RESET_ABORTED)
            channel.stop_reading(self.stream_id, wire.RESET_ABORTED)
            self._kick()
        self._forget()

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        self.on_readable()

    # --- the channel side ---------------------------------------------------------------------

    def on_readable(self) -> None:
        channel = self.channel()
        if channel is None or self.transport is None or self.stream_id is None:
            return
        while not self.paused_writing and not self.transport.is_closing():
            chunks = channel.read_chunks(self.stream_id, READ_CHUNK)
            if not chunks:
                break
            self.transport.writelines(chunks)  # one writev: no join of the chunks first
        if not self.stream_eof and channel.is_eof(self.stream_id):
            self.stream_eof = True
            if self.transport.can_write_eof() and not self.transport.is_closing():
                self.transport.write_eof()
        self._maybe_close()
        self._kick()

    def on_writable(self) -> None:
        self._flush_pending()
        if not self.pending and self.transport is not None and not self.tcp_eof:
            self.transport.resume_reading()
        self._maybe_fin()

    def on_reset(self, code: int) -> None:
        log.info("stream %s reset by peer: %s", self.stream_id, wire.reset_reason(code))
        self.closed = True
        if self.transport is not None:
            reset_tcp(self.transport)
        self._forget()

    # --- internals ----------------------------------------------------------------------------

    def channel(self) -> Channel | None:
        """The channel of this bridge's stream, while it is the peer's channel. After a peer
        restart the peer has a new channel where `stream_id` means another stream (or none):
        never touch that one; the old channel's close resets this bridge."""
        channel = self._attached_to
        if channel is None or self.link is None or self.link.channel is not channel:
            return None
        return channel

    def _flush_pending(self) -> None:
        channel = self.channel()
        if channel is None or self.stream_id is None or not self.pending:
            return
        taken = channel.write(self.stream_id, self.pending)
        del self.pending[:taken]
        self._kick()

    def _maybe_fin(self) -> None:
        channel = self.channel()
        if (self.tcp_eof and not self.pending and not self.fin_sent
                and channel is not None and self.stream_id is not None):
            self.fin_sent = True
            channel.shutdown_write(self.stream_id)
            self._kick()

    def _maybe_close(self) -> None:
        if self.tcp_eof and self.stream_eof and self.fin_sent and self.transport is not None:
            self.closed = True
            self.transport.close()
            self._forget()

    def _kick(self) -> None:
        """Ask the node to flush this bridge's peer (none yet: nothing to send)."""
        if self.link is not None:
            self.forwarder.node.kick(self.link)

    def _forget(self) -> None:
        if self.link is not None and self.stream_id is not None:
            self.forwarder.bridges.pop((self.link.static, self.stream_id), None)
