"""Constants of the reliable multiplexed channel, grouped like wireguard-go's `constants.go`.

"Protocol" values are seen by the peer (changing them changes behaviour on the wire); the
windows and the stream limit are this end's own, announced to the peer in the handshake's
transport parameters, so the two ends may differ. The "implementation" values are local
choices. Every value carries its unit and the reason for it.
Specs: RFC 9000 (streams, flow control), RFC 9002 (recovery), RFC 9221 (datagrams).
"""

from __future__ import annotations

from typing import Final

# --- protocol -------------------------------------------------------------------------------

#: bytes; the whole UDP payload budget every IPv4/IPv6 path must carry (RFC 9000 §14) ...
DATAGRAM_BUDGET: Final = 1200
#: bytes; ... minus the secure session's header and AEAD tag (`tunnel/session/wire.py`).
SESSION_OVERHEAD: Final = 32
#: bytes; so a channel packet is at most this much by default.
DEFAULT_MAX_PACKET_SIZE: Final = DATAGRAM_BUDGET - SESSION_OVERHEAD

#: seconds; how long the receiver may hold an ACK (RFC 9000 §18.2 max_ack_delay default).
MAX_ACK_DELAY: Final = 0.025
#: ack-eliciting packets received before an ACK is sent at once (RFC 9000 §13.2.2).
ACK_ELICITING_THRESHOLD: Final = 2
#: ack ranges carried in one ACK frame. An ACK goes out every second packet, so each range is
#: repeated in many ACKs before ten newer holes push it out; more ranges only cost CPU (the
#: encoding and decoding of ranges dominated the per-packet profile at 32).
MAX_ACK_RANGES: Final = 10

#: bytes; first per-stream receive window, grown by auto-tuning (quic-go starts at 512 KiB).
INITIAL_STREAM_WINDOW: Final = 2 * 1024 * 1024
#: bytes; the per-stream window never grows past this: bounds one stream's receive buffer.
MAX_STREAM_WINDOW: Final = 16 * 1024 * 1024
#: bytes; first connection window (quic-go uses 1.5x the stream window).
INITIAL_CONNECTION_WINDOW: Final = 3 * 1024 * 1024
#: bytes; bounds all receive buffers of one channel together.
MAX_CONNECTION_WINDOW: Final = 24 * 1024 * 1024
#: concurrent streams the peer may open; raised as streams finish (RFC 9000 §4.6). A stream
#: costs nothing until used; 4,096 lets a busy forwarder (a browser, a build farm) keep many
#: idle connections open. Each end announces its own in the handshake's transport parameters
#: (`tunnel/session/params.py`), and the other opens no more than that.
INITIAL_MAX_STREAMS: Final = 4096

# --- recovery (RFC 9002 §6, appendix A.2) ---------------------------------------------------

#: packets; reordering tolerated before a packet is declared lost (kPacketThreshold).
PACKET_THRESHOLD: Final = 3
#: RTTs; time reordering threshold (kTimeThreshold = 9/8).
TIME_THRESHOLD: Final = 9 / 8
#: seconds; timer granularity (kGranularity).
GRANULARITY: Final = 0.001
#: seconds; the smallest RTT sample or rate interval kept. The shell's clock is
#: `time.monotonic()` (nanoseconds), so a real sample is never this small; the floor only keeps
#: a zero out of divisions. Samples must NOT be floored at GRANULARITY: on a LAN or loopback
#: path (RTT 0.05-0.3 ms) that divided each delivery-rate sample by 1 ms instead of the real
#: interval, and BBR spiralled down to 3.6 MB/s on a 100 MB/s path.
MIN_SAMPLE: Final = 1e-6
#: seconds; RTT assumed before the first sample (kInitialRtt).
INITIAL_RTT: Final = 0.333
#: PTO periods of no acknowledgement that make congestion persistent (RFC 9002 §7.6).
PERSISTENT_CONGESTION_THRESHOLD: Final = 3
#: seconds; the PTO backoff stops doubling here, so a path back from a multi-second blackhole is
#: probed again within a second (RFC 9002 leaves the cap to the implementation).
MAX_PTO_INTERVAL: Final = 1.0

# --- congestion control ---------------------------------------------------------------------

#: packets; initial window (RFC 9002 §7.2: 10 x max datagram size).
INITIAL_WINDOW_PACKETS: Final = 10
#: packets; the window never shrinks below this (kMinimumWindow = 2 packets).
MINIMUM_WINDOW_PACKETS: Final = 2
#: NewReno's multiplicative decrease (kLossReductionFactor).
LOSS_REDUCTION_FACTOR: Final = 0.5
#: pace at this multiple of cwnd/srtt for window-based controllers (RFC 9002 §7.7, N = 1.25).
PACING_GAIN_WINDOWED: Final = 1.25
#: seconds; a pacer may burst this much sending time at once (about one uvloop clock tick).
PACING_BURST_TIME: Final = 0.002
#: packets; bounds of the pacer's burst: PACING_BURST_TIME of sending (a home uplink's small
#: queue sees 2 ms at a time), at most four 64 KB GSO sends of 1,472-byte datagrams (2 ms up to
#: ~130 MB/s). The bucket must hold more than the shell's timer resolution, or a wake that comes
#: a millisecond later than asked finds it full and the rate is lost: a one-send (44-packet)
#: bucket is 0.8 ms at 80 MB/s.
PACING_MIN_BURST_PACKETS: Final = 2
PACING_MAX_BURST_PACKETS: Final = 176
#: seconds; when the bucket is short, the pacer asks to be woken once this much sending has
#: built up (at most half the bucket), not as soon as one packet has. uvloop runs a timer due in
#: under 0.5 ms at once (call_soon), so the one-packet deadline (17 µs at 80 MB/s) made the
#: sender wake at every turn of the event loop: 5,800 times a second, 9 packets a wake.
PACING_WAKE_TIME: Final = 0.001

# --- implementation -------------------------------------------------------------------------

#: bytes; a stream accepts at least this much unacknowledged data from the application
#: (backpressure), more only while the peer's credit is larger (see SendStream.writable_space) ...
STREAM_SEND_BUFFER: Final = 2 * 1024 * 1024
#: bytes; ... and never more than this: twice the largest stream window.
MAX_SEND_BUFFER: Final = 2 * MAX_STREAM_WINDOW
#: bytes; all the streams of a channel together accept at most this much unacknowledged data:
#: twice the largest connection window, since the peer never takes more than that window at once.
#: Bounded per stream only, 8 bulk connections could make a node hold 256 MiB.
MAX_CHANNEL_SEND_BUFFER: Final = 2 * MAX_CONNECTION_WINDOW
#: bytes; streams that the channel's bound held back hear StreamWritable once this much is free
#: again (not at every acknowledged packet, which would wake every one of them for 64 KB).
CHANNEL_WRITABLE_AT: Final = 256 * 1024
#: bytes of receive window per out-of-order segment a stream, or all streams of a channel
#: together, may hold. A held segment costs ~100 bytes of bookkeeping however small it is, so
#: without a count a peer sending one-byte segments within its credit made us hold 100x that
#: credit. Full packets carry ~1,140 stream bytes: a sender that fills the whole window behind a
#: lost packet uses less than half of this allowance; a peer that exceeds it is closed with
#: FLOW_CONTROL_ERROR (quic-go bounds its gaps the same way, MaxStreamFrameSorterGaps).
WINDOW_PER_HELD_SEGMENT: Final = 512
#: out-of-order segments a stream may always hold, however small its window (tests use a few KB).
MIN_HELD_SEGMENTS: Final = 64
#: bytes; a segment smaller than this is copied onto the in-order chunk or the early piece it
#: continues (while that stays within COALESCED_CHUNK), so one-byte frames waiting for a stalled
#: reader cost about a byte each, not a Python object each, and small writes behind a lost packet
#: count as one held segment. Full packets are larger and are kept without a copy.
SMALL_CHUNK: Final = 512
#: bytes; the largest chunk small chunks are coalesced into.
COALESCED_CHUNK: Final = 4096
#: bytes; a packet at least this large is handed to the sealer as its parts, not joined: at
#: path-MTU packets the join was the last copy of a frame's data. A smaller packet is joined,
#: because below this the copy costs less than handing over (and encrypting) each part; at
#: 1,472-byte datagrams the parts made the sender 5 % slower.
PARTS_MIN: Final = 8192
#: bytes; a stream with data to send keeps the front of the round-robin for this much before the
#: next stream's turn. Packet-by-packet round-robin cut every 64 KB GSO train into one slice per
#: busy stream, so with 8 bulk streams the receiver wrote 6 KB per TCP write instead of 64 KB
#: (10x the writes; 8 parallel connections moved less than one). One GSO train of data makes
#: those writes whole again and delays another stream by at most ~0.5 ms at 100 MB/s.
STREAM_QUANTUM: Final = 64 * 1024
#: datagrams queued for sending; more are refused (they are unreliable anyway).
MAX_QUEUED_DATAGRAMS: Final = 256
#: seconds; without any packet from the peer for this long the channel closes.
IDLE_TIMEOUT: Final = 30.0
#: a quiet channel PINGs this many times per idle timeout, so the session's keepalives (which
#: carry no channel packet) are not needed to keep an idle tunnel open; three survive two losses
KEEPALIVES_PER_IDLE_TIMEOUT: Final = 3
#: PTOs the closing side lingers to repeat its CLOSE frame (RFC 9000 §10.2: three PTOs).
CLOSING_PTOS: Final = 3
#: bytes; longest close reason sent.
MAX_CLOSE_REASON: Final = 256
#: packet numbers remembered for duplicate detection beyond the ack ranges.
RX_HISTORY_RANGES: Final = 64

# --- close error codes (RFC 9000 §20.1 values, so logs read the same) -----------------------

NO_ERROR: Final = 0x0
INTERNAL_ERROR: Final = 0x1
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_LIMIT_ERROR: Final = 0x4
STREAM_STATE_ERROR: Final = 0x5
FINAL_SIZE_ERROR: Final = 0x6
PROTOCOL_VIOLATION: Final = 0xA
IDLE_TIMEOUT_ERROR: Final = 0x100  # local only: never sent
# A node that stops closes its channels with this: the peer then waits for it to come back (a
# new session) instead of opening a new channel on a session whose other end is exiting, where
# a connection opened meanwhile would be reset once the restarted node replaced that channel.
NODE_STOPPING: Final = 0x101

#: how logs name the codes a peer is closed with
ERROR_NAMES: Final = {
    NO_ERROR: "NO_ERROR",
    INTERNAL_ERROR: "INTERNAL_ERROR",
    FLOW_CONTROL_ERROR: "FLOW_CONTROL_ERROR",
    STREAM_LIMIT_ERROR: "STREAM_LIMIT_ERROR",
    STREAM_STATE_ERROR: "STREAM_STATE_ERROR",
    FINAL_SIZE_ERROR: "FINAL_SIZE_ERROR",
    PROTOCOL_VIOLATION: "PROTOCOL_VIOLATION",
    NODE_STOPPING: "NODE_STOPPING",
}
