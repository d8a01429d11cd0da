"""Past-tense events the channel reports through `Channel.next_event()`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (it may already carry data)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReadable:
    """New data or the end of the stream can be read with `Channel.read`. Edge-triggered: it is
    reported again only after a `read` has emptied the stream's buffer."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """A stream that refused a write has buffer space again."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer aborted its sending half (RESET_STREAM); unread data is discarded."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The peer will not read any more (STOP_SENDING); our sending half was reset."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The channel is closing: locally (`by_peer` False), by the peer, or on an idle timeout or
    protocol error. Streams are unusable from here on."""

    reason: str
    error_code: int
    by_peer: bool


ChannelEvent = (
    StreamOpened
    | StreamReadable
    | StreamWritable
    | StreamReset
    | StreamStopped
    | DatagramReceived
    | ChannelClosed
)
