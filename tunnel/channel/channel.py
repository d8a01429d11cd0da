"""The reliable multiplexed channel: ordered streams and unreliable datagrams over one path.

A sans-IO state machine on plaintext packets (the secure session seals and opens them). It starts
established (the session did the handshake). The one interface:

    receive_packet(data, now)   ->  None          feed one decrypted packet
    packets_to_send(now)        ->  list[bytes]   what cwnd and the pacer allow now
    packet_parts_to_send(now)   ->  the same packets, a large one as the list of parts it is
                                    the concatenation of (for a sealer that takes parts)
    get_timer()                 ->  float | None  absolute deadline (ack delay, loss, PTO, pacing,
                                                  idle, closing)
    handle_timer(now)
    next_event()                ->  ChannelEvent | None

Stream API: `open_stream`, `write` (returns bytes accepted: backpressure), `read`, `is_eof`,
`shutdown_write` (FIN), `reset_stream`, `stop_reading`; `send_datagram`; `close`; `stats`.
Specs: RFC 9000 (streams, flow control, frames, closing), RFC 9002 (recovery, congestion),
RFC 9221 (datagrams). ACK frames are applied after the other frames of their packets
("Settling acknowledgements" below). Stream ids: the client opens even ids, the server odd ids;
all are bidirectional. Around it: `frames.py` (wire layouts), `acks.py` (what to acknowledge),
`control.py` (control frames to send), `streamtable.py` (stream table and limits), `stream.py`
(the halves of a stream and flow control), `reassembly.py` (early segments, each byte held once),
`recovery.py` (RFC 9002), `congestion/` (BBR, CUBIC, NewReno), `pacing.py`.

A peer that breaks the protocol (beyond its credit, too many out-of-order segments, an impossible
stream id or final size) has the channel closed with the RFC 9000 error code and a reason in the
CLOSE frame, and one WARNING line naming the peer (`peer=`, the node passes its fingerprint).

Settling acknowledgements: an ACK frame is put aside when it arrives and applied (with the time
it arrived) when anything next depends on it: a public call that touches sending, the timers or
the statistics, an event asked for once the earlier ones are taken, or any frame but STREAM
after it. So what a packet brings for a reader (its StreamReadable) reaches the application
before the bookkeeping of what it acknowledges: in ping-pong, from a datagram's arrival to its
reply's write to the local socket took 23-24 µs instead of 32-33 at each end. The receiving and
sending halves are independent, so the order changes nothing else.

Lifecycle: OPEN -> CLOSING (we sent CLOSE; repeat it to any packet for three PTOs) or DRAINING
(the peer sent CLOSE; stay silent for three PTOs) -> CLOSED. `ChannelClosed` is reported on
leaving OPEN; `is_closed` turns true at the end.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tunnel.channel.acks import AckState
from tunnel.channel.congestion import create_controller
from tunnel.channel.constants import (
    CLOSING_PTOS,
    DEFAULT_MAX_PACKET_SIZE,
    ERROR_NAMES,
    FINAL_SIZE_ERROR,
    FLOW_CONTROL_ERROR,
    IDLE_TIMEOUT,
    IDLE_TIMEOUT_ERROR,
    INITIAL_CONNECTION_WINDOW,
    INITIAL_MAX_STREAMS,
    INITIAL_STREAM_WINDOW,
    KEEPALIVES_PER_IDLE_TIMEOUT,
    MAX_ACK_DELAY,
    MAX_CHANNEL_SEND_BUFFER,
    MAX_CLOSE_REASON,
    MAX_CONNECTION_WINDOW,
    MAX_QUEUED_DATAGRAMS,
    MAX_STREAM_WINDOW,
    NO_ERROR,
    NODE_STOPPING,
    PARTS_MIN,
    STREAM_QUANTUM,
    STREAM_SEND_BUFFER,
)
from tunnel.channel.control import (
    F_ACK,
    F_PING,
    F_RESET,
    F_STREAM,
    ControlFrames,
)
from tunnel.channel.events import (
    ChannelClosed,
    ChannelEvent,
    DatagramReceived,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
    StreamWritable,
)
from tunnel.channel.pacing import Pacer
from tunnel.channel.recovery import LossRecovery, SentFrame, SentPacket
from tunnel.channel.stream import (
    FinalSizeError,
    FlowControlError,
    ReceiveWindow,
    SegmentBudget,
    SendBudget,
)
from tunnel.channel.streamtable import ChannelError as ChannelError  # re-exported for callers
from tunnel.channel.streamtable import PeerError, Stream, StreamTable

from . import frames as fr

log = logging.getLogger(__name__)

# kinds of SentFrame: what a sent packet must redo if lost, or settle if acknowledged

OPEN: Final = "open"
CLOSING: Final = "closing"
DRAINING: Final = "draining"
CLOSED: Final = "closed"
PROBE_PACKETS: Final = 2  # RFC 9002 §6.2.4: a PTO sends up to two probes


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Counters for `ptunnel status`. Byte counts are channel packet bytes or stream payload."""

    packets_sent: int
    packets_received: int
    bytes_sent: int
    bytes_received: int
    stream_bytes_sent: int
    stream_bytes_received: int
    retransmitted_bytes: int
    packets_lost: int
    packets_dropped: int  # malformed or duplicate
    smoothed_rtt: float
    min_rtt: float
    rttvar: float
    cwnd: int
    bytes_in_flight: int
    pacing_rate: float | None
    open_streams: int


class Channel:
    """Our limits (`stream_window`, `connection_window`, `max_streams`) bound what we receive;
    the peer's, from the handshake's transport parameters (`peer_*`, ours when None), bound what
    we send: the first credit on each stream and on the channel, and the streams we may open."""

    def __init__(
        self,
        is_client: bool,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        congestion: str = "bbr",
        rng: Callable[[int], bytes] = os.urandom,
        idle_timeout: float = IDLE_TIMEOUT,
        stream_send_buffer: int = STREAM_SEND_BUFFER,
        max_send_buffer: int = MAX_CHANNEL_SEND_BUFFER,
        stream_window: int = INITIAL_STREAM_WINDOW,
        max_stream_window: int = MAX_STREAM_WINDOW,
        connection_window: int = INITIAL_CONNECTION_WINDOW,
        max_connection_window: int = MAX_CONNECTION_WINDOW,
        max_streams: int = INITIAL_MAX_STREAMS,
        peer: str = "",
        peer_stream_window: int | None = None,
        peer_connection_window: int | None = None,
        peer_max_streams: int | None = None,
        opened_at: float | None = None,
    ) -> None:
        if max_packet_size < 64:
            raise ValueError("max_packet_size too small")
        self.is_client = is_client
        self._peer = peer or "the peer"  # for logs: who broke the protocol
        self.max_packet_size = max_packet_size
        self._base_packet_size = max_packet_size  # the size the path was known to carry first
        self._packet_limit = max_packet_size  # size of the packet being built
        self._rng = rng
        self._idle_timeout = idle_timeout
        self._state = OPEN
        # The peer closed this channel because its node is stopping (NODE_STOPPING).
        self.peer_stopping = False
        self._events: deque[ChannelEvent] = deque()
        self._queued_datagram_events = 0
        self._cc = create_controller(congestion, max_packet_size, rng)
        self._recovery = LossRecovery(self._cc, MAX_ACK_DELAY)
        self._pacer = Pacer(max_packet_size)
        self._next_pn = 0
        self._probes = 0
        self._pacing_deadline: float | None = None
        self._idle_deadline: float | None = None
        # The session's keepalives carry no channel packet, so a quiet tunnel (an idle SSH login)
        # would reach the idle timeout: PING after a third of it without ack-eliciting traffic.
        self._keepalive_interval = idle_timeout / KEEPALIVES_PER_IDLE_TIMEOUT
        # From `opened_at` on, when given: a channel that never carries a packet (a tunnel up
        # with no connection yet) still PINGs, so a peer that died meanwhile is noticed.
        self._last_activity: float | None = opened_at
        self._ping_pending = False
        self._close_deadline: float | None = None
        self._close_packet_frame = b""  # the CLOSE frame, repeated while CLOSING
        # Opaque bytes every packet of `packets_to_send` starts with, outside `max_packet_size`
        # and every count: the layer below's header, so that a packet is one join, not a join
        # and then a copy to put the header in front (1,400 bytes a full packet).
        self.packet_prefix = b""
        self._close_pending = False
        self._close_resend: float | None = None  # CLOSING: when to repeat the CLOSE unasked
        # connection flow control
        # the peer's credit to us, first as its transport parameters announced
        self._conn_send_max = (
            connection_window if peer_connection_window is None else peer_connection_window
        )
        self._conn_sent = 0  # new stream bytes sent (retransmissions do not count)
        self._conn_window = ReceiveWindow(connection_window, max_connection_window)
        self._send_budget = SendBudget(max_send_buffer)
        # streams whose writes the channel's bound refused, to hear StreamWritable when it frees
        self._held_back: set[int] = set()
        self._table = StreamTable(
            is_client,
            stream_send_buffer,
            stream_window,
            max_stream_window,
            max_streams,
            stream_window if peer_stream_window is None else peer_stream_window,
            max_streams if peer_max_streams is None else peer_max_streams,
            SegmentBudget(self._conn_window),
            self._send_budget,
        )
        self._streams = self._table.streams
        self._sendable = self._table.sendable
        # the stream at the front of `_sendable` and what is left of its turn (STREAM_QUANTUM)
        self._turn_of = -1
        self._turn_left = 0
        self._conn_received = 0  # sum of highest offsets received
        self._conn_consumed = 0  # bytes read by the application or discarded
        self._control = ControlFrames()
        self._datagrams: deque[bytes] = deque()
        # acknowledgement state
        self._acks = AckState()
        self._last_eliciting_sent = 0.0
        # ACK frames received and not yet applied, with when they came (`_settle_acks`)
        self._unsettled_acks: list[tuple[fr.AckFrame, float]] = []
        # statistics
        self._packets_sent = self._packets_received = self._packets_dropped = 0
        self._bytes_sent = self._bytes_received = 0
        self._stream_bytes_sent = self._stream_bytes_received = 0
        self._retransmitted = 0

    # ===== application API ======================================================================

    @property
    def heard(self) -> bool:
        """A packet of the peer's was received (the peer's side of this channel exists)."""
        return self._packets_received > 0

    @property
    def is_closed(self) -> bool:
        return self._state == CLOSED

    @property
    def is_open(self) -> bool:
        return self._state == OPEN

    @property
    def bytes_in_flight(self) -> int:
        """Bytes of ack-eliciting packets sent and not yet acknowledged or lost."""
        self._settle_acks()
        return self._recovery.bytes_in_flight

    def next_event(self) -> ChannelEvent | None:
        """The next event; those of the acknowledgements that came come after the others."""
        if not self._events:
            self._settle_acks()
            if not self._events:
                return None
        event = self._events.popleft()
        if isinstance(event, DatagramReceived):
            self._queued_datagram_events -= 1
        return event

    def open_stream(self) -> int:
        if self._state != OPEN:
            raise ChannelError("channel is closed")
        return self._table.open_local().stream_id

    def can_open_stream(self) -> bool:
        return self._state == OPEN and self._table.can_open()

    def write(self, stream_id: int, data: bytes | bytearray | memoryview,
              owned: bool = False) -> int:
        """Buffer up to the stream's free send space; return how many bytes were accepted.
        When fewer than offered, `StreamWritable` follows once space frees up. `owned`: the
        caller never writes to `data`'s memory again, so the stream keeps a view of it."""
        self._settle_acks()
        stream = self._stream_for_app(stream_id)
        if stream is None or self._state != OPEN:
            return 0
        if stream.send.fin_requested:
            raise ChannelError(f"write after shutdown_write on stream {stream_id}")
        send = stream.send
        accepted = send.write(data, owned)
        if accepted:
            self._mark_sendable(stream)
        if accepted < len(data) and self._send_budget.space() <= send.own_space():
            self._held_back.add(stream_id)  # the other streams hold the channel's share
        return accepted

    def writable_space(self, stream_id: int) -> int:
        self._settle_acks()
        stream = self._stream_for_app(stream_id)
        return 0 if stream is None else stream.send.writable_space()

    def shutdown_write(self, stream_id: int) -> None:
        """Half-close: send FIN after the buffered data (like TCP shutdown(SHUT_WR))."""
        self._settle_acks()
        stream = self._stream_for_app(stream_id)
        if stream is None or stream.send.fin_requested or stream.send.reset_code is not None:
            return
        stream.send.fin_requested = True
        self._mark_sendable(stream)

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Abort the sending half: unsent and unacknowledged data is dropped (RESET_STREAM)."""
        self._settle_acks()
        stream = self._stream_for_app(stream_id)
        if stream is None or stream.send.reset_code is not None or stream.send.done:
            return
        self._reset_send(stream, error_code)

    def stop_reading(self, stream_id: int, error_code: int = 0) -> None:
        """Discard incoming data and ask the peer to reset its sending half (STOP_SENDING)."""
        self._settle_acks()
        stream = self._stream_for_app(stream_id)
        if stream is None or stream.recv.stopped or stream.recv.done:
            return
        stream.recv.stopped = True
        self._conn_consumed += stream.recv.discard()
        self._control.stops[stream_id] = error_code
        self._maybe_update_connection_credit(None)
        self._maybe_retire(stream)

    def read(self, stream_id: int, max_bytes: int | None = None) -> bytes:
        """Take up to `max_bytes` in-order bytes (all buffered when None)."""
        return b"".join(self.read_chunks(stream_id, max_bytes))

    def read_chunks(
        self, stream_id: int, max_bytes: int | None = None
    ) -> list[bytes | memoryview]:
        """`read`, as the chunks the bytes arrived in (views of their packets where large), so
        that a writer with `writelines` copies them once, into the socket."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return []
        recv = stream.recv
        before = recv.read_offset
        chunks = recv.take(max_bytes)
        if chunks:
            self._conn_consumed += recv.read_offset - before
            if recv.window.needs_update(recv.read_offset) and recv.final_size is None:
                self._control.max_stream_data.add(stream_id)
            self._maybe_update_connection_credit(None)
        if recv.done:
            self._maybe_retire(stream)
        return chunks

    def is_eof(self, stream_id: int) -> bool:
        """True once everything up to the peer's FIN was read (or the stream is gone)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return self._table.existed(stream_id)
        return stream.recv.eof_delivered

    def ping(self) -> None:
        """Send a PING with the next packets: something the peer acknowledges, so an answer
        shows it still holds this channel (several calls before they leave ask for one)."""
        if self._state == OPEN:
            self._ping_pending = True

    def send_datagram(self, data: bytes) -> bool:
        """Queue an unreliable datagram; False when it cannot fit a packet or the queue is full."""
        # packet number, frame type, length; the base size, so a datagram fits any later path
        limit = self._base_packet_size - 8 - 1 - 2
        if self._state != OPEN or len(data) > limit or len(self._datagrams) >= MAX_QUEUED_DATAGRAMS:
            return False
        self._datagrams.append(bytes(data))
        return True

    @property
    def max_datagram_size(self) -> int:
        return self.max_packet_size - 11

    def set_max_packet_size(self, size: int) -> None:
        """The path proved it carries `size`-byte packets (or fell back): build packets of that
        size from now on. Congestion control and pacing count in bytes, so their state carries
        over; only their per-packet unit changes."""
        self._settle_acks()
        if size < 64:
            raise ValueError("max_packet_size too small")
        self.max_packet_size = size
        self._packet_limit = min(self._packet_limit, size)
        self._base_packet_size = min(self._base_packet_size, size)
        self._cc.mss = size
        self._pacer.set_mss(size)

    def close(self, reason: str = "", error_code: int = NO_ERROR) -> None:
        if self._state != OPEN:
            return
        self._enter_closing(error_code, reason, by_peer=False)

    def stats(self) -> ChannelStats:
        self._settle_acks()
        rtt = self._recovery.rtt
        return ChannelStats(
            packets_sent=self._packets_sent,
            packets_received=self._packets_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            stream_bytes_sent=self._stream_bytes_sent,
            stream_bytes_received=self._stream_bytes_received,
            retransmitted_bytes=self._retransmitted,
            packets_lost=self._recovery.packets_lost,
            packets_dropped=self._packets_dropped,
            smoothed_rtt=rtt.smoothed,
            min_rtt=rtt.min_rtt if rtt.has_sample else 0.0,
            rttvar=rtt.rttvar,
            cwnd=self._cc.cwnd,
            bytes_in_flight=self._recovery.bytes_in_flight,
            pacing_rate=self._cc.pacing_rate,
            open_streams=len(self._streams),
        )

    def buffered_bytes(self) -> int:
        """Bytes this channel holds for its streams (send and receive buffers)."""
        self._settle_acks()
        return sum(s.send.buffered + s.recv.buffered for s in self._streams.values())

    # ===== streams ==============================================================================

    def _stream_for_app(self, stream_id: int) -> Stream | None:
        return self._table.for_app(stream_id)

    def _stream_for_peer(self, stream_id: int) -> Stream | None:
        stream = self._table.streams.get(stream_id)
        if stream is not None:  # every frame but a stream's first: no list, no generator
            return stream
        opened: list[int] = []
        stream = self._table.for_peer(stream_id, opened)
        self._events.extend(StreamOpened(sid) for sid in opened)
        return stream

    def _mark_sendable(self, stream: Stream) -> None:
        self._table.mark_sendable(stream)

    def _maybe_retire(self, stream: Stream) -> None:
        if not (stream.send.done and stream.recv.done):
            return
        if stream.stream_id in self._control.resets or stream.stream_id in self._control.stops:
            return
        self._table.retire(stream)
        self._control.max_stream_data.discard(stream.stream_id)

    def _maybe_update_connection_credit(self, now: float | None) -> None:
        if self._conn_window.needs_update(self._conn_consumed):
            self._control.max_data = True

    # ===== receiving ============================================================================

    def receive_packet(self, data: bytes, now: float, start: int = 0) -> None:
        """Take the packet `data[start:]` (`start` skips the layer below's header, uncopied)."""
        if self._state in (DRAINING, CLOSED):
            return
        decoded = fr.decode_packet(data, start)
        if decoded is None:
            self._packets_dropped += 1
            log.debug("dropped a malformed packet of %d bytes", len(data) - start)
            return
        pn, frames = decoded
        acks = self._acks
        if acks.is_duplicate(pn):
            self._packets_dropped += 1
            return
        self._packets_received += 1
        self._bytes_received += len(data) - start
        if self._state == CLOSING:
            self._close_pending = True  # the peer has not seen our CLOSE: say it again
            return
        self._idle_deadline = now + self._idle_timeout
        self._last_activity = now
        in_order = acks.on_packet_received(pn, now)
        ack_eliciting = False
        try:
            for frame in frames:
                if self._state != OPEN:
                    break  # a CLOSE frame ends the packet: nothing after it is applied
                if self._apply(frame, now):
                    ack_eliciting = True
        except PeerError as error:
            log.warning(
                "closing the channel with %s: %s (%s)",
                self._peer,
                error.reason,
                ERROR_NAMES.get(error.code, f"error {error.code:#x}"),
            )
            self._enter_closing(error.code, error.reason, by_peer=False)
            return
        if ack_eliciting and self._state == OPEN:
            acks.on_ack_eliciting(in_order, now)

    def _apply(self, frame: fr.Frame, now: float) -> bool:
        """Apply one frame; whether it elicits an ACK. An isinstance chain, most frequent
        first: compiled, it is direct calls, where a dict of bound methods was a generic call.
        An ACK frame waits for `_settle_acks`; any frame but STREAM applies those before it."""
        if isinstance(frame, fr.StreamFrame):
            self._handle_stream_frame(frame, now)
            return True
        if isinstance(frame, fr.AckFrame):
            self._unsettled_acks.append((frame, now))
            return False
        if isinstance(frame, fr.PaddingFrame):
            return False
        self._settle_acks()
        if isinstance(frame, fr.MaxStreamDataFrame):
            self._handle_max_stream_data_frame(frame, now)
        elif isinstance(frame, fr.MaxDataFrame):
            self._handle_max_data_frame(frame, now)
        elif isinstance(frame, fr.DatagramFrame):
            self._handle_datagram_frame(frame, now)
        elif isinstance(frame, fr.MaxStreamsFrame):
            self._handle_max_streams_frame(frame, now)
        elif isinstance(frame, fr.ResetStreamFrame):
            self._handle_reset_stream_frame(frame, now)
        elif isinstance(frame, fr.StopSendingFrame):
            self._handle_stop_sending_frame(frame, now)
        elif isinstance(frame, fr.CloseFrame):
            self._handle_close_frame(frame, now)
        return True  # PING only elicits an ACK; so do all frames above but ACK and PADDING

    def _handle_stream_frame(self, frame: fr.StreamFrame, now: float) -> None:
        stream = self._stream_for_peer(frame.stream_id)
        if stream is None:
            return
        recv = stream.recv
        highest_before = recv.highest
        try:
            grown, news = recv.on_frame(frame.offset, frame.data, frame.fin)
        except FlowControlError as error:
            raise PeerError(FLOW_CONTROL_ERROR, f"stream {frame.stream_id}: {error}") from error
        except FinalSizeError as size_error:  # its own name: mypyc types `error` by the first
            raise PeerError(FINAL_SIZE_ERROR,
                            f"stream {frame.stream_id}: {size_error}") from size_error
        if grown:
            self._conn_received += grown
            if self._conn_received > self._conn_window.max_data:
                raise PeerError(FLOW_CONTROL_ERROR, "connection credit exceeded")
            self._stream_bytes_received += recv.highest - highest_before
            if recv.stopped or recv.reset_code is not None:
                self._conn_consumed += recv.discard()
                self._maybe_update_connection_credit(now)
        if news and not recv.readable_signalled:
            recv.readable_signalled = True
            self._events.append(StreamReadable(frame.stream_id))
        if recv.done:
            self._maybe_retire(stream)

    def _settle_acks(self) -> None:
        """Apply the ACK frames put aside, in the order and at the times they came (every public
        call that depends on them starts here; with none put aside it returns at once)."""
        if not self._unsettled_acks:
            return
        unsettled, self._unsettled_acks = self._unsettled_acks, []
        for frame, now in unsettled:
            self._handle_ack_frame(frame, now)

    def _handle_ack_frame(self, frame: fr.AckFrame, now: float) -> None:
        acked, lost = self._recovery.on_ack_received(frame.ranges, frame.ack_delay_us / 1e6, now)
        if acked:
            self._probes = 0
        for packet in acked:
            for sent in packet.frames:
                self._on_frame_acked(sent)
        self._requeue_lost(lost)
        self._wake_held_back()

    def _reset_send(self, stream: Stream, error_code: int) -> None:
        """Drop a sending half's data (RESET_STREAM follows); what it held may unblock others."""
        stream.send.reset(error_code)
        self._control.resets.add(stream.stream_id)
        self._wake_held_back()

    def _wake_held_back(self) -> None:
        """StreamWritable for the streams the channel's bound held back that may write again,
        once enough of the bound is free (`SendBudget.roomy`)."""
        if not self._held_back or not self._send_budget.roomy():
            return
        for sid in list(self._held_back):
            stream = self._streams.get(sid)
            if stream is None or not stream.send.want_writable:
                self._held_back.discard(sid)
            elif stream.send.writable_space() > 0:
                self._held_back.discard(sid)
                stream.send.want_writable = False
                self._events.append(StreamWritable(sid))

    def _handle_max_data_frame(self, frame: fr.MaxDataFrame, now: float) -> None:
        if frame.maximum > self._conn_send_max:
            self._conn_send_max = frame.maximum
            for stream in self._streams.values():
                if stream.send.has_new_data():
                    self._mark_sendable(stream)

    def _handle_max_stream_data_frame(self, frame: fr.MaxStreamDataFrame, now: float) -> None:
        stream = self._stream_for_peer(frame.stream_id)
        if stream is not None and frame.maximum > stream.send.max_data:
            stream.send.max_data = frame.maximum
            if stream.send.has_new_data():
                self._mark_sendable(stream)

    def _handle_max_streams_frame(self, frame: fr.MaxStreamsFrame, now: float) -> None:
        self._table.peer_max_streams = max(self._table.peer_max_streams, frame.maximum)

    def _handle_reset_stream_frame(self, frame: fr.ResetStreamFrame, now: float) -> None:
        stream = self._stream_for_peer(frame.stream_id)
        if stream is None or stream.recv.reset_code is not None:
            return
        recv = stream.recv
        try:
            grown = recv.on_reset(frame.error_code, frame.final_size)
        except FlowControlError as error:
            raise PeerError(FLOW_CONTROL_ERROR, str(error)) from error
        except FinalSizeError as size_error:  # its own name: mypyc types `error` by the first
            raise PeerError(FINAL_SIZE_ERROR, str(size_error)) from size_error
        self._conn_received += grown
        if self._conn_received > self._conn_window.max_data:
            raise PeerError(FLOW_CONTROL_ERROR, "connection credit exceeded")
        self._conn_consumed += recv.discard()
        self._maybe_update_connection_credit(now)
        self._control.stops.pop(frame.stream_id, None)
        self._events.append(StreamReset(frame.stream_id, frame.error_code))
        self._maybe_retire(stream)

    def _handle_stop_sending_frame(self, frame: fr.StopSendingFrame, now: float) -> None:
        stream = self._stream_for_peer(frame.stream_id)
        if stream is None or stream.send.reset_code is not None or stream.send.done:
            return
        self._reset_send(stream, frame.error_code)
        self._events.append(StreamStopped(frame.stream_id, frame.error_code))

    def _handle_datagram_frame(self, frame: fr.DatagramFrame, now: float) -> None:
        if self._queued_datagram_events < MAX_QUEUED_DATAGRAMS:  # unread ones are dropped
            self._queued_datagram_events += 1
            self._events.append(DatagramReceived(frame.data))

    def _handle_close_frame(self, frame: fr.CloseFrame, now: float) -> None:
        self.peer_stopping = frame.error_code == NODE_STOPPING
        self._state = DRAINING
        self._close_deadline = now + CLOSING_PTOS * self._recovery.pto_interval()
        self._events.append(ChannelClosed(frame.reason, frame.error_code, by_peer=True))

    # ===== acknowledgement and loss of what we sent ============================================

    def _on_frame_acked(self, sent: SentFrame) -> None:
        kind, sid, offset, length, fin = sent
        if kind == F_STREAM:
            stream = self._streams.get(sid)
            if stream is None:
                return
            send = stream.send
            freed = send.on_data_acked(offset, length, bool(fin))
            # what an acknowledgement frees, it frees in the channel's bound too
            if freed and send.want_writable and send.writable_space() > 0:
                send.want_writable = False
                self._events.append(StreamWritable(sid))
            if send.done:
                self._maybe_retire(stream)
        elif kind == F_RESET:
            stream = self._streams.get(sid)
            if stream is not None:
                stream.send.reset_acked = True
                self._maybe_retire(stream)
        elif kind == F_ACK:
            self._acks.on_ack_acknowledged(sid)

    def _requeue_lost(self, lost: list[SentPacket]) -> None:
        for packet in lost:
            for sent in packet.frames:
                self._on_frame_lost(sent)

    def _on_frame_lost(self, sent: SentFrame) -> None:
        kind, sid, offset, length, fin = sent
        if kind == F_STREAM:
            stream = self._streams.get(sid)
            if stream is not None and stream.send.reset_code is None:
                stream.send.on_data_lost(offset, length, bool(fin))
                if stream.send.has_retransmit():
                    self._mark_sendable(stream)
        elif kind not in (F_ACK, F_PING):
            self._control.on_lost(sent, self._table)

    # ===== timers ===============================================================================

    def get_timer(self) -> float | None:
        self._settle_acks()
        if self._state == CLOSED:
            return None
        if self._state != OPEN:
            if self._state == CLOSING and self._close_resend is not None:
                return min(self._close_resend, self._close_deadline or self._close_resend)
            return self._close_deadline
        deadline = self._idle_deadline  # called after every event: no lists, few calls
        for candidate in (
            self._acks.deadline if self._acks.pending else None,
            self._recovery.get_loss_detection_timer(),
            self._pacing_deadline,
            None if self._last_activity is None else self._last_activity + self._keepalive_interval,
        ):
            if candidate is not None and (deadline is None or candidate < deadline):
                deadline = candidate
        return deadline

    def handle_timer(self, now: float) -> None:
        self._settle_acks()
        if self._state == CLOSED:
            return
        if self._state != OPEN:
            if self._close_deadline is not None and now >= self._close_deadline:
                self._state = CLOSED
            elif self._close_resend is not None and now >= self._close_resend:
                # a lost CLOSE would leave a quiet peer waiting for its idle timeout: repeat it
                # once a PTO while closing (three times in all)
                self._close_pending = True
                self._close_resend = None
            return
        if self._idle_deadline is not None and now >= self._idle_deadline:
            self._state = CLOSED
            self._events.append(ChannelClosed("idle timeout", IDLE_TIMEOUT_ERROR, by_peer=False))
            return
        if (
            self._last_activity is not None
            and now >= self._last_activity + self._keepalive_interval
        ):
            self._ping_pending = True
            self._last_activity = now  # one PING per quiet interval, lost or not
        if self._pacing_deadline is not None and now >= self._pacing_deadline:
            self._pacing_deadline = None  # packets_to_send re-checks the pacer
        loss_timer = self._recovery.get_loss_detection_timer()
        if loss_timer is not None and now >= loss_timer:
            lost, probe = self._recovery.on_loss_detection_timeout(now)
            self._requeue_lost(lost)
            if probe:
                self._probes = PROBE_PACKETS
                # RFC 9002 §6.2.4: probes carry data still in flight, oldest first
                self._requeue_lost(self._recovery.oldest_in_flight(PROBE_PACKETS))

    # ===== sending ==============================================================================

    def _enter_closing(self, code: int, reason: str, by_peer: bool) -> None:
        self._settle_acks()
        if self._state != OPEN:
            return
        raw = reason.encode()[:MAX_CLOSE_REASON].decode("utf-8", errors="ignore")
        self._close_packet_frame = fr.encode_frame(fr.CloseFrame(code, raw))
        self._state = CLOSING
        self._close_pending = True
        self._close_deadline = None
        self._events.append(ChannelClosed(reason, code, by_peer=by_peer))

    def _has_ack_eliciting_work(self) -> bool:
        return bool(
            self._sendable
            or self._datagrams
            or self._probes
            or self._ping_pending
            or self._control.pending(self._table)
        )

    def packets_to_send(self, now: float) -> list[bytes]:
        return [packet if isinstance(packet, bytes) else b"".join(packet)
                for packet in self.packet_parts_to_send(now)]

    def packet_parts_to_send(self, now: float) -> list[bytes | list[bytes | memoryview]]:
        """`packets_to_send`, but a packet of `PARTS_MIN` bytes or more comes as its parts:
        `packet_prefix`, the packet number, the frames, and views of the streams' bytes, which
        the C sealer encrypts in place of the join that was the last copy of a frame's data."""
        self._settle_acks()
        if self._state != OPEN:
            return self._closing_packets(now)
        packets: list[bytes | list[bytes | memoryview]] = []
        recovery, cc, pacer = self._recovery, self._cc, self._pacer
        mss = self.max_packet_size
        # After the path proved large datagrams, a packet may be smaller than `mss` to fit what
        # is left of the window, but never smaller than a base-size packet (no silly windows).
        smallest = min(mss, self._base_packet_size)
        self._pacing_deadline = None
        while True:
            has_work = self._has_ack_eliciting_work()
            may_send = False
            window = cc.cwnd - recovery.bytes_in_flight
            limit = max(smallest, min(mss, window))  # the largest packet the window takes now
            if has_work:
                if self._probes:
                    may_send = True
                elif window >= smallest:
                    # the bucket must hold this packet's bytes, not a full packet's: a window
                    # below one 65,000-byte packet would wait for tokens it never spends
                    when = pacer.send_time(now, cc.pacing_rate, limit)
                    if when <= now:
                        may_send = True
                    else:
                        self._pacing_deadline = when
            elif window >= mss:
                recovery.on_app_limited()
            if not may_send and not self._acks.due(now):
                break
            self._packet_limit = mss if self._probes else limit
            packet = self._build_packet(now, may_send)
            if packet is None:
                break
            packets.append(packet)
        return packets

    def _closing_packets(self, now: float) -> list[bytes | list[bytes | memoryview]]:
        if self._state != CLOSING or not self._close_pending:
            return []
        self._close_pending = False
        pto = self._recovery.pto_interval()
        if self._close_deadline is None:
            self._close_deadline = now + CLOSING_PTOS * pto
        if now + pto < self._close_deadline:
            self._close_resend = now + pto
        packet = fr.encode_varint(self._next_pn) + self._close_packet_frame
        self._next_pn += 1
        self._packets_sent += 1
        self._bytes_sent += len(packet)
        return [self.packet_prefix + packet]

    def _build_packet(
        self, now: float, ack_eliciting: bool
    ) -> bytes | list[bytes | memoryview] | None:
        pn = self._next_pn
        header = fr.encode_varint(pn)
        parts: list[bytes | memoryview] = [self.packet_prefix, header]
        space = self._packet_limit - len(header)
        sent: list[SentFrame] = []
        with_ack = self._acks.pending
        ack_ranges = 0
        if with_ack:
            ack, largest, ack_ranges = self._acks.encode(now)
            parts.append(ack)
            space -= len(ack)
            sent.append((F_ACK, largest, 0, 0, 0))
        base = len(parts)
        if ack_eliciting:
            if self._control.pending(self._table):
                space = self._control.write(
                    parts,
                    sent,
                    space,
                    now,
                    self._table,
                    self._conn_window,
                    self._conn_consumed,
                    self._recovery.rtt.smoothed,
                )
            if self._datagrams:
                space = self._add_datagrams(parts, space)
            if self._sendable:
                space = self._add_stream_frames(parts, sent, space)
            if len(parts) == base and (self._probes or self._ping_pending):
                parts.append(b"\x01")  # a probe or keepalive with nothing to carry is a PING
                sent.append((F_PING, 0, 0, 0, 0))
        elif ack_ranges > 1 and now - self._last_eliciting_sent > self._recovery.rtt.smoothed:
            # RFC 9000 §13.2.4: a receive-only side makes an ACK eliciting about once an RTT, so
            # it learns which ranges the peer has seen and its ACK frames stay short. Only when
            # there are holes to stop repeating: two quiet peers would otherwise PING-pong.
            parts.append(b"\x01")
            sent.append((F_PING, 0, 0, 0, 0))
        eliciting = len(parts) > base
        if eliciting and self._probes and ack_eliciting:
            self._probes -= 1
        if len(parts) == 2:
            return None
        packet: bytes | list[bytes | memoryview] = parts
        if self._packet_limit - space < PARTS_MIN:  # about its size (a PING is not in `space`)
            packet = b"".join(parts)
            size = len(packet) - len(self.packet_prefix)
        else:
            size = -len(self.packet_prefix)
            for part in parts:
                size += len(part)
        self._next_pn = pn + 1
        self._packets_sent += 1
        self._bytes_sent += size
        if eliciting:
            self._last_eliciting_sent = now
            self._last_activity = now
            self._ping_pending = False
            if self._idle_deadline is None:
                self._idle_deadline = now + self._idle_timeout
            record = SentPacket(pn, now, size, True, sent)
            recovery = self._recovery
            if (
                not self._has_ack_eliciting_work()
                and recovery.bytes_in_flight + size < self._cc.cwnd
            ):
                # this packet empties the queue with window to spare: its delivery-rate sample
                # measures the application, not the path (draft-cheng-iccrg-delivery-rate §3.4)
                recovery.on_app_limited()
            recovery.on_packet_sent(record, now)
            if not self._probes:
                self._pacer.on_packet_sent(size)
        return packet

    def _add_datagrams(self, parts: list[bytes | memoryview], space: int) -> int:
        datagrams = self._datagrams
        while datagrams and len(datagrams[0]) + 3 <= space:
            data = datagrams.popleft()
            frame = b"\x30" + fr.encode_varint(len(data)) + data
            parts.append(frame)
            space -= len(frame)
        return space

    def _add_stream_frames(
        self, parts: list[bytes | memoryview], sent: list[SentFrame], space: int
    ) -> int:
        sendable = self._sendable
        streams = self._streams
        # a frame's header: type, id, offset (8), length (2 below 16 KiB packets, else 4)
        length_size = 2 if self.max_packet_size < 0x4000 else 4
        while sendable and space > 16:
            sid = sendable[0]
            if sid != self._turn_of:  # a new stream's turn
                self._turn_of, self._turn_left = sid, STREAM_QUANTUM
            stream = streams.get(sid)
            credit = self._conn_send_max - self._conn_sent
            if stream is None or not stream.send.wants_to_send(credit):
                sendable.popleft()
                self._table.in_sendable.discard(sid)
                continue
            send = stream.send
            offset_hint = send.next_offset
            overhead = 1 + fr.varint_size(sid) + fr.varint_size(offset_hint) + length_size
            max_payload = space - overhead
            if max_payload <= 0:
                break
            offset, data, fin, new_bytes = send.next_frame(max_payload, credit)
            if not data and not fin:
                sendable.popleft()
                self._table.in_sendable.discard(sid)
                continue
            frame = fr.encode_stream_header(sid, offset, len(data), fin)
            parts.append(frame)
            parts.append(data)
            space -= len(frame) + len(data)
            sent.append((F_STREAM, sid, offset, len(data), int(fin)))
            self._conn_sent += new_bytes
            self._stream_bytes_sent += new_bytes
            if new_bytes < len(data) or not new_bytes:
                self._retransmitted += len(data) - new_bytes
            # round-robin by quantum: the stream goes to the back when its turn is used up
            # (or drops out when it has nothing more); until then it fills the next packets too
            self._turn_left -= len(data)
            if not send.wants_to_send(self._conn_send_max - self._conn_sent):
                sendable.popleft()
                self._table.in_sendable.discard(sid)
            elif self._turn_left <= 0:
                sendable.popleft()
                sendable.append(sid)
                self._turn_of = -1  # its next turn starts afresh, even when it is alone
        return space
