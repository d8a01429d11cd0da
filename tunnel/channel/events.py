"""Past-tense events the channel reports through `Channel.next_event()`.

Each class spells out its `__init__`, so that mypyc compiles it (see `tunnel.channel.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, init=False)
class StreamOpened:
    """The peer opened a stream (it may already carry data)."""

    stream_id: int

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


@dataclass(slots=True, init=False)
class StreamReadable:
    """New data or the end of the stream can be read with `Channel.read`. Edge-triggered: it is
    reported again only after a `read` has emptied the stream's buffer."""

    stream_id: int

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


@dataclass(slots=True, init=False)
class StreamWritable:
    """A stream that refused a write has buffer space again."""

    stream_id: int

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


@dataclass(slots=True, init=False)
class StreamReset:
    """The peer aborted its sending half (RESET_STREAM); unread data is discarded."""

    stream_id: int
    error_code: int

    def __init__(self, stream_id: int, error_code: int) -> None:
        self.stream_id = stream_id
        self.error_code = error_code


@dataclass(slots=True, init=False)
class StreamStopped:
    """The peer will not read any more (STOP_SENDING); our sending half was reset."""

    stream_id: int
    error_code: int

    def __init__(self, stream_id: int, error_code: int) -> None:
        self.stream_id = stream_id
        self.error_code = error_code


@dataclass(slots=True, init=False)
class DatagramReceived:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(slots=True, init=False)
class ChannelClosed:
    """The channel is closing: locally (`by_peer` False), by the peer, or on an idle timeout or
    protocol error. Streams are unusable from here on."""

    reason: str
    error_code: int
    by_peer: bool

    def __init__(self, reason: str, error_code: int, by_peer: bool) -> None:
        self.reason = reason
        self.error_code = error_code
        self.by_peer = by_peer


ChannelEvent = (
    StreamOpened
    | StreamReadable
    | StreamWritable
    | StreamReset
    | StreamStopped
    | DatagramReceived
    | ChannelClosed
)
