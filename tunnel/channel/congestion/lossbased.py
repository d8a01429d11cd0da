"""Loss-based congestion controllers (NewReno, CUBIC) and the factory that picks one by name.

NewReno follows RFC 9002 §7 (slow start, congestion avoidance, one reduction per recovery
period); CUBIC follows RFC 9438 (cubic window growth, beta 0.7, Reno-friendly region). The
model-based controller lives in `bbr.py`. All share the interface in `recovery.py`:
`on_packet_sent`, `on_ack`, `on_loss`, `on_persistent_congestion`, `cwnd`, `pacing_rate`.
Windowed controllers pace at 1.25 x cwnd / srtt (RFC 9002 §7.7).
"""

from __future__ import annotations

import math
from typing import Final

from tunnel.channel.constants import (
    INITIAL_WINDOW_PACKETS,
    LOSS_REDUCTION_FACTOR,
    MINIMUM_WINDOW_PACKETS,
    PACING_GAIN_WINDOWED,
)
from tunnel.channel.recovery import CongestionController, RateSample, RttEstimator, SentPacket

CUBIC_C: Final = 0.4  # RFC 9438 §5.1, in segments / s^3
CUBIC_BETA: Final = 0.7  # RFC 9438 §4.6: multiplicative decrease


class NewReno(CongestionController):
    """RFC 9002 §7.3 NewReno with byte counting."""

    def __init__(self, max_datagram_size: int) -> None:
        self.mss = max_datagram_size
        self._cwnd = INITIAL_WINDOW_PACKETS * max_datagram_size
        self.ssthresh: float = math.inf
        self.recovery_start = -1.0
        self._acked_in_ca = 0
        self._srtt = 0.0

    @property
    def cwnd(self) -> int:
        return self._cwnd

    @property
    def pacing_rate(self) -> float | None:
        if self._srtt <= 0:
            return None
        return PACING_GAIN_WINDOWED * self._cwnd / self._srtt

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:
        pass

    def _in_recovery(self, time_sent: float) -> bool:
        return time_sent <= self.recovery_start

    def on_ack(
        self,
        acked: list[SentPacket],
        sample: RateSample,
        rtt: RttEstimator,
        bytes_in_flight: int,
        now: float,
    ) -> None:
        self._srtt = rtt.smoothed
        for packet in acked:
            if not packet.in_flight or self._in_recovery(packet.time_sent):
                continue
            if self._cwnd < self.ssthresh:
                self._cwnd += packet.size
            else:
                self._acked_in_ca += packet.size
                if self._acked_in_ca >= self._cwnd:
                    self._acked_in_ca -= self._cwnd
                    self._cwnd += self.mss

    def on_loss(self, lost: list[SentPacket], bytes_in_flight: int, now: float) -> None:
        if self._in_recovery(lost[-1].time_sent):
            return
        self.recovery_start = now
        self._cwnd = max(int(self._cwnd * LOSS_REDUCTION_FACTOR), self._minimum)
        self.ssthresh = float(self._cwnd)  # float attribute: mypyc stores no int in it
        self._acked_in_ca = 0

    @property
    def _minimum(self) -> int:
        return MINIMUM_WINDOW_PACKETS * self.mss

    def on_persistent_congestion(self, now: float) -> None:
        self._cwnd = self._minimum
        self.recovery_start = now


class Cubic(NewReno):
    """RFC 9438 CUBIC on top of NewReno's slow start and recovery bookkeeping."""

    def __init__(self, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size)
        self.w_max = 0.0  # bytes
        self.k = 0.0  # seconds
        self.epoch_start: float | None = None
        self.w_est = 0.0  # bytes; Reno-friendly estimate

    def on_ack(
        self,
        acked: list[SentPacket],
        sample: RateSample,
        rtt: RttEstimator,
        bytes_in_flight: int,
        now: float,
    ) -> None:
        self._srtt = rtt.smoothed
        newly = sum(p.size for p in acked if p.in_flight and not self._in_recovery(p.time_sent))
        if not newly:
            return
        if self._cwnd < self.ssthresh:
            self._cwnd += newly
            return
        if self.epoch_start is None:
            self.epoch_start = now
            self.w_est = float(self._cwnd)
            if self.w_max < self._cwnd:
                self.w_max = float(self._cwnd)
                self.k = 0.0
            else:
                self.k = ((self.w_max - self._cwnd) / self.mss / CUBIC_C) ** (1 / 3)
        t = now - self.epoch_start + rtt.smoothed
        target = self.w_max + CUBIC_C * (t - self.k) ** 3 * self.mss
        target = min(max(target, self._cwnd), 1.5 * self._cwnd)
        # RFC 9438 §4.3 Reno-friendly estimate: alpha = 3 (1 - beta) / (1 + beta)
        alpha = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)
        self.w_est += alpha * self.mss * newly / self._cwnd
        target = max(target, self.w_est)
        self._cwnd += int((target - self._cwnd) * newly / self._cwnd) if target > self._cwnd else 0

    def on_loss(self, lost: list[SentPacket], bytes_in_flight: int, now: float) -> None:
        if self._in_recovery(lost[-1].time_sent):
            return
        self.recovery_start = now
        # RFC 9438 §4.7 fast convergence
        if self._cwnd < self.w_max:
            self.w_max = self._cwnd * (1 + CUBIC_BETA) / 2
        else:
            self.w_max = float(self._cwnd)
        self._cwnd = max(int(self._cwnd * CUBIC_BETA), self._minimum)
        self.ssthresh = float(self._cwnd)
        self.epoch_start = None

    def on_persistent_congestion(self, now: float) -> None:
        super().on_persistent_congestion(now)
        self.epoch_start = None
