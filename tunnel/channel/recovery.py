"""Loss detection, RTT estimation and probe timeouts after RFC 9002, plus delivery-rate samples.

`LossRecovery` keeps the packets in flight, turns ACK ranges into acknowledged and lost packets,
and owns the one loss-detection deadline (a loss-time for reordering or a PTO). It never builds
packets: the channel re-queues the frames of lost packets (per-frame retransmission, as aioquic)
and sends probes when `on_loss_detection_timeout` asks for them.

Delivery-rate samples follow draft-cheng-iccrg-delivery-rate-estimation: every sent packet
remembers how much had been delivered when it left, so an ACK yields "bytes delivered over the
interval", which is what a model-based controller (BBR) needs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from tunnel.channel.constants import (
    GRANULARITY,
    INITIAL_RTT,
    MAX_PTO_INTERVAL,
    MIN_SAMPLE,
    PACKET_THRESHOLD,
    PERSISTENT_CONGESTION_THRESHOLD,
    TIME_THRESHOLD,
)

#: what a sent packet carried, for retransmission: (kind, a, b, c, d); kinds are the channel's
SentFrame = tuple[int, int, int, int, int]


class SentPacket:
    """One packet in flight. Mutable bookkeeping, not a message, hence a slotted plain class."""

    __slots__ = (
        "ack_eliciting",
        "delivered",
        "delivered_time",
        "first_sent_time",
        "frames",
        "in_flight",
        "is_app_limited",
        "packet_number",
        "size",
        "time_sent",
    )

    def __init__(
        self,
        packet_number: int,
        time_sent: float,
        size: int,
        ack_eliciting: bool,
        frames: list[SentFrame],
    ) -> None:
        self.packet_number = packet_number
        self.time_sent = time_sent
        self.size = size
        self.ack_eliciting = ack_eliciting
        self.in_flight = ack_eliciting  # ACK-only packets are not congestion controlled
        self.frames = frames
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.is_app_limited = False


@dataclass(slots=True, init=False)
class RateSample:
    """What one ACK taught about the path's delivery rate. (An explicit `__init__`, compiled by
    mypyc: see `tunnel.channel.frames`.)"""

    delivery_rate: float = 0.0  # bytes/s; 0 when the ACK gave no valid sample
    is_app_limited: bool = False
    prior_delivered: int = 0  # connection's delivered count when the sampled packet left
    newly_acked: int = 0  # bytes
    newly_lost: int = 0  # bytes

    def __init__(
        self,
        delivery_rate: float = 0.0,
        is_app_limited: bool = False,
        prior_delivered: int = 0,
        newly_acked: int = 0,
        newly_lost: int = 0,
    ) -> None:
        self.delivery_rate = delivery_rate
        self.is_app_limited = is_app_limited
        self.prior_delivered = prior_delivered
        self.newly_acked = newly_acked
        self.newly_lost = newly_lost


class RttEstimator:
    """RFC 9002 §5: latest, smoothed, variance and minimum RTT in seconds."""

    __slots__ = ("has_sample", "latest", "min_rtt", "rttvar", "smoothed")

    def __init__(self) -> None:
        self.has_sample = False
        self.latest = 0.0
        self.min_rtt = math.inf
        self.smoothed = INITIAL_RTT
        self.rttvar = INITIAL_RTT / 2

    def update(self, latest: float, ack_delay: float) -> None:
        # the shell's clock is fine-grained (see MIN_SAMPLE); the floor only keeps out a zero
        latest = max(latest, MIN_SAMPLE)
        self.latest = latest
        if latest < self.min_rtt:
            self.min_rtt = latest
        if not self.has_sample:
            self.has_sample = True
            self.smoothed = latest
            self.rttvar = latest / 2
            return
        adjusted = latest - ack_delay if latest - ack_delay >= self.min_rtt else latest
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed - adjusted)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted


class CongestionController:
    """The small interface every controller implements (NewReno, CUBIC, BBR): they subclass it.
    A base class, not a Protocol: compiled, a call through a Protocol is a generic method call
    with its arguments boxed, and these run for every packet sent and every ACK."""

    mss: int  # bytes per full packet; grows when the path proves larger datagrams

    @property
    def cwnd(self) -> int:
        raise NotImplementedError

    @property
    def pacing_rate(self) -> float | None:
        """Bytes per second, or None to send unpaced."""
        raise NotImplementedError

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:
        raise NotImplementedError

    def on_ack(
        self,
        acked: list[SentPacket],
        sample: RateSample,
        rtt: RttEstimator,
        bytes_in_flight: int,
        now: float,
    ) -> None:
        raise NotImplementedError

    def on_loss(self, lost: list[SentPacket], bytes_in_flight: int, now: float) -> None:
        raise NotImplementedError

    def on_persistent_congestion(self, now: float) -> None:
        raise NotImplementedError


class LossRecovery:
    """Packets in flight, ACK processing, loss detection and the PTO (RFC 9002 §6, appendix A)."""

    def __init__(self, congestion: CongestionController, max_ack_delay: float) -> None:
        self.cc = congestion
        self.rtt = RttEstimator()
        self.max_ack_delay = max_ack_delay
        # Packet-number order. An OrderedDict, not a dict: a dict that keeps losing its oldest
        # entries makes `next(iter())` and in-order walks skip ever more dead slots until it
        # resizes (15 us an ACK measured); the linked OrderedDict finds its first entry in O(1).
        self.sent: OrderedDict[int, SentPacket] = OrderedDict()
        self.bytes_in_flight = 0
        self.largest_acked = -1
        self.pto_count = 0
        self.loss_time: float | None = None
        self.last_ack_eliciting_time: float | None = None
        self.first_rtt_sample_time: float | None = None
        # delivery-rate estimation state (bytes, seconds)
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.app_limited_until = 0  # `delivered` value at which the app-limited phase ends
        # statistics
        self.packets_lost = 0
        self.bytes_lost = 0

    # --- sending ------------------------------------------------------------------------------

    def on_packet_sent(self, packet: SentPacket, now: float) -> None:
        if packet.in_flight:
            if self.bytes_in_flight == 0:
                self.first_sent_time = now
                self.delivered_time = now
            packet.delivered = self.delivered
            packet.delivered_time = self.delivered_time
            packet.first_sent_time = self.first_sent_time
            packet.is_app_limited = self.app_limited_until > 0
            self.bytes_in_flight += packet.size
            self.last_ack_eliciting_time = now
            self.cc.on_packet_sent(packet, self.bytes_in_flight, now)
            self.sent[packet.packet_number] = packet
        # ACK-only packets are not remembered: nothing acknowledges them (RFC 9000 §13.2.1), so
        # keeping them would grow without bound on a receive-only channel.

    def on_app_limited(self) -> None:
        """The sender had window to spare and nothing to send: rate samples understate the path."""
        self.app_limited_until = max(self.delivered + self.bytes_in_flight, 1)

    # --- acknowledgements ---------------------------------------------------------------------

    def on_ack_received(
        self, ranges: tuple[tuple[int, int], ...], ack_delay: float, now: float
    ) -> tuple[list[SentPacket], list[SentPacket]]:
        """Process one ACK frame; return `(newly acked, newly lost)` packets."""
        sent = self.sent
        acked: list[SentPacket] = []
        if sent:
            smallest_outstanding = next(iter(sent))
            for lo, hi in ranges:
                if hi < smallest_outstanding:
                    break
                lo = max(lo, smallest_outstanding)
                if hi - lo < 2 * len(sent):
                    for pn in range(hi, lo - 1, -1):
                        packet = sent.pop(pn, None)
                        if packet is not None:
                            acked.append(packet)
                else:  # a huge range: walk what is outstanding instead of the range
                    for pn in [p for p in sent if lo <= p <= hi]:
                        acked.append(sent.pop(pn))
        if not acked:
            return acked, []
        acked.reverse()  # oldest first
        largest = acked[-1]
        if largest.packet_number > self.largest_acked:
            self.largest_acked = largest.packet_number
            if any(p.ack_eliciting for p in acked):
                # RFC 9002 §5.1: only a newly largest, ack-eliciting packet gives an RTT sample
                self.rtt.update(now - largest.time_sent, min(ack_delay, self.max_ack_delay))
                if self.first_rtt_sample_time is None:
                    self.first_rtt_sample_time = now
        sample = RateSample()
        acked_bytes = 0
        newest: SentPacket | None = None
        for packet in acked:
            if not packet.in_flight:
                continue
            acked_bytes += packet.size
            if newest is None or packet.delivered >= newest.delivered:
                newest = packet
        self.bytes_in_flight -= acked_bytes
        if newest is not None:
            self.delivered += acked_bytes
            self.delivered_time = now
            sample.newly_acked = acked_bytes
            sample.prior_delivered = newest.delivered
            sample.is_app_limited = newest.is_app_limited
            send_elapsed = newest.time_sent - newest.first_sent_time
            ack_elapsed = now - newest.delivered_time
            # the real interval, however short (a LAN's 0.1 ms): flooring it at the timer
            # granularity understated the rate 10x there, and BBR followed it down
            interval = max(max(send_elapsed, ack_elapsed), MIN_SAMPLE)  # 2-argument: inline
            self.first_sent_time = newest.time_sent
            if interval >= self.rtt.min_rtt:
                sample.delivery_rate = (self.delivered - newest.delivered) / interval
            if self.app_limited_until and self.delivered > self.app_limited_until:
                self.app_limited_until = 0
        lost = self._detect_lost(now)
        sample.newly_lost = sum(p.size for p in lost if p.in_flight)
        self.pto_count = 0
        if acked_bytes:
            self.cc.on_ack(acked, sample, self.rtt, self.bytes_in_flight, now)
        self._on_lost(lost, now)
        return acked, lost

    # --- loss detection -----------------------------------------------------------------------

    def _loss_delay(self) -> float:
        rtt = self.rtt
        base = max(rtt.latest, rtt.smoothed) if rtt.has_sample else INITIAL_RTT
        return max(TIME_THRESHOLD * base, GRANULARITY)

    def _detect_lost(self, now: float) -> list[SentPacket]:
        """RFC 9002 §6.1: packet and time thresholds; sets `loss_time` for the earliest pending."""
        self.loss_time = None
        loss_delay = self._loss_delay()
        packet_limit = self.largest_acked - PACKET_THRESHOLD
        lost: list[SentPacket] = []
        for pn, packet in self.sent.items():
            if pn > self.largest_acked:
                break
            # compare deadlines, not `time_sent <= now - delay`: the timer fires at exactly the
            # deadline and float rounding must not leave the packet pending forever
            deadline = packet.time_sent + loss_delay
            if pn <= packet_limit or deadline <= now:
                lost.append(packet)
            elif self.loss_time is None or deadline < self.loss_time:
                self.loss_time = deadline
        for packet in lost:
            del self.sent[packet.packet_number]
        return lost

    def _on_lost(self, lost: list[SentPacket], now: float) -> None:
        if not lost:
            return
        in_flight = [p for p in lost if p.in_flight]
        self.packets_lost += len(lost)
        lost_bytes = sum(p.size for p in in_flight)
        self.bytes_lost += lost_bytes
        self.bytes_in_flight -= lost_bytes
        if not in_flight:
            return
        self.cc.on_loss(in_flight, self.bytes_in_flight, now)
        # RFC 9002 §7.6 (simplified): losses spanning three PTOs with no ACK in between
        if self.first_rtt_sample_time is not None and len(in_flight) >= 2:
            first, last = in_flight[0].time_sent, in_flight[-1].time_sent
            span = PERSISTENT_CONGESTION_THRESHOLD * self._pto_base()
            if first > self.first_rtt_sample_time and last - first >= span:
                self.cc.on_persistent_congestion(now)

    # --- timer --------------------------------------------------------------------------------

    def _pto_base(self) -> float:
        rtt = self.rtt
        return rtt.smoothed + max(4 * rtt.rttvar, GRANULARITY) + self.max_ack_delay

    def pto_interval(self) -> float:
        base = self._pto_base()
        return min(base * (1 << min(self.pto_count, 16)), max(MAX_PTO_INTERVAL, base))

    def get_loss_detection_timer(self) -> float | None:
        if self.loss_time is not None:
            return self.loss_time
        if self.bytes_in_flight <= 0 or self.last_ack_eliciting_time is None:
            return None
        return self.last_ack_eliciting_time + self.pto_interval()

    def on_loss_detection_timeout(self, now: float) -> tuple[list[SentPacket], bool]:
        """Handle the deadline: return `(lost packets, whether probes must be sent)`."""
        if self.loss_time is not None:
            lost = self._detect_lost(now)
            self._on_lost(lost, now)
            return lost, False
        self.pto_count += 1
        self.last_ack_eliciting_time = now  # re-arm from now even if the probe is never sent
        return [], True

    def oldest_in_flight(self, count: int) -> list[SentPacket]:
        """The oldest ack-eliciting packets, whose frames a probe should carry again."""
        found: list[SentPacket] = []
        for packet in self.sent.values():
            if packet.ack_eliciting:
                found.append(packet)
                if len(found) == count:
                    break
        return found
