"""The channel's table of streams: ids, opening (local and implicit peer opens), limits,
retirement, and the round-robin of streams with something to send (RFC 9000 §2.1, §3, §4.6).

Stream ids: the client opens even ids, the server odd ids (index n is id 2n + parity); all are
bidirectional. A peer's stream n opens streams below n implicitly, so a frame for a peer stream
below `peer_opened` that is no longer in the table belongs to a finished stream and is ignored.
"""

from __future__ import annotations

from collections import deque

from tunnel.channel.constants import STREAM_LIMIT_ERROR, STREAM_STATE_ERROR
from tunnel.channel.stream import (
    ReceiveStream,
    ReceiveWindow,
    SegmentBudget,
    SendBudget,
    SendStream,
)


class ChannelError(Exception):
    """The local application misused the channel (unknown stream, write after FIN, ...)."""


class PeerError(Exception):
    """The peer broke the protocol; the channel closes with this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Stream:
    __slots__ = ("recv", "send", "stream_id")

    def __init__(self, stream_id: int, send: SendStream, recv: ReceiveStream) -> None:
        self.stream_id = stream_id
        self.send = send
        self.recv = recv


class StreamTable:
    def __init__(
        self,
        is_client: bool,
        send_buffer: int,
        window: int,
        max_window: int,
        max_streams: int,
        peer_window: int,
        peer_max_streams: int,
        segments: SegmentBudget,
        send_budget: SendBudget,
    ) -> None:
        self.streams: dict[int, Stream] = {}
        self._segments = segments  # out-of-order segments held over all streams
        self._send_budget = send_budget  # unacknowledged bytes held over all streams
        self.local_parity = 0 if is_client else 1
        self._send_buffer = send_buffer
        self._window = (window, max_window)
        self.next_local_index = 0
        self.peer_opened = 0  # peer stream indices below this were opened
        # Our limits bound what the peer sends; its own, from the transport parameters of the
        # handshake (`tunnel/session/params.py`), bound what we send: each end keeps its own.
        self._peer_window = peer_window  # the first credit the peer gives each stream
        self.peer_max_streams = peer_max_streams  # how many we may open (their credit)
        self.local_max_streams = max_streams  # how many the peer may open (our credit)
        self.send_max_streams = False  # our credit grew: tell the peer
        self.sendable: deque[int] = deque()  # round-robin of streams with frames to send
        self.in_sendable: set[int] = set()

    def can_open(self) -> bool:
        return self.next_local_index < self.peer_max_streams

    def open_local(self) -> Stream:
        if not self.can_open():
            raise ChannelError("the peer's stream limit is reached; wait for streams to finish")
        index = self.next_local_index
        self.next_local_index += 1
        return self._create(2 * index + self.local_parity)

    def _create(self, stream_id: int) -> Stream:
        window = ReceiveWindow(*self._window)
        # the peer's credit on a new stream is the stream window it announced
        send = SendStream(self._send_buffer, self._peer_window, self._send_budget)
        stream = Stream(stream_id, send, ReceiveStream(window, self._segments))
        self.streams[stream_id] = stream
        return stream

    def existed(self, stream_id: int) -> bool:
        index = stream_id >> 1
        if stream_id & 1 == self.local_parity:
            return index < self.next_local_index
        return index < self.peer_opened

    def for_app(self, stream_id: int) -> Stream | None:
        """The stream the application names; None once finished; ChannelError if it never was."""
        stream = self.streams.get(stream_id)
        if stream is None and not self.existed(stream_id):
            raise ChannelError(f"no such stream {stream_id}")
        return stream

    def for_peer(self, stream_id: int, opened: list[int]) -> Stream | None:
        """The stream a peer frame names, opening peer streams implicitly (their ids are appended
        to `opened`); None if it already finished. Raises PeerError for impossible ids."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        index = stream_id >> 1
        if stream_id & 1 == self.local_parity:
            if index >= self.next_local_index:
                raise PeerError(STREAM_STATE_ERROR, f"frame for unopened stream {stream_id}")
            return None
        if index < self.peer_opened:
            return None
        if index >= self.local_max_streams:
            raise PeerError(STREAM_LIMIT_ERROR, f"stream {stream_id} beyond the limit")
        peer_parity = 1 - self.local_parity
        for n in range(self.peer_opened, index + 1):
            self._create(2 * n + peer_parity)
            opened.append(2 * n + peer_parity)
        self.peer_opened = index + 1
        return self.streams[stream_id]

    def mark_sendable(self, stream: Stream) -> None:
        if stream.stream_id not in self.in_sendable:
            self.in_sendable.add(stream.stream_id)
            self.sendable.append(stream.stream_id)

    def retire(self, stream: Stream) -> None:
        """Forget a finished stream; a peer's finished stream lets the peer open one more."""
        del self.streams[stream.stream_id]
        if stream.stream_id & 1 != self.local_parity:
            self.local_max_streams += 1
            self.send_max_streams = True
