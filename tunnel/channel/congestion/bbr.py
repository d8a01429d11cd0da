"""A model-based congestion controller after BBR (v1: Cardwell et al., ACM Queue 2016, and
draft-cardwell-iccrg-bbr-congestion-control-00).

BBR estimates the bottleneck bandwidth (windowed max of delivery-rate samples over 10 rounds) and
the round-trip propagation time (windowed min over 10 s) and paces at their product instead of
reacting to each loss, which is why it keeps a lossy home uplink full where NewReno collapses.
States: STARTUP (gain 2/ln2 until the bandwidth stops growing 25% per round for three rounds),
DRAIN (empty the queue STARTUP built), PROBE_BW (gain cycle 1.25, 0.75, 1 x 6), and PROBE_RTT
(4 packets for 200 ms when the min-RTT sample is 10 s old, so competing flows see the real RTT).
Once the pipe is filled the window also holds what ACKs delivered beyond the bandwidth estimate
in a burst (Linux `bbr_update_ack_aggregation`, in BBR since Linux 4.20): see `_note_aggregation`;
persistent congestion (a path that was down) forgets it.
Until the pipe is filled the pacing rate never drops below HIGH_GAIN x initial window / SRTT (the
draft's BBRInitPacingRate and BBRSetPacingRateWithGain): a few app-limited bytes must not set it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Final

from tunnel.channel.constants import GRANULARITY, INITIAL_WINDOW_PACKETS
from tunnel.channel.recovery import CongestionController, RateSample, RttEstimator, SentPacket

HIGH_GAIN: Final = 2.885  # 2 / ln 2: doubles the sending rate each round in STARTUP
# The type spelled out: compiled, a bare-`Final` tuple of floats is never set (mypyc 1.x).
PROBE_BW_GAINS: Final[tuple[float, ...]] = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CWND_GAIN: Final = 2.0  # cwnd = 2 x BDP absorbs delayed and stretched ACKs
BW_WINDOW_ROUNDS: Final = 10  # bandwidth max-filter length in round trips
MIN_RTT_WINDOW: Final = 10.0  # seconds; min-RTT filter length
PROBE_RTT_DURATION: Final = 0.2  # seconds spent at the minimum window
MIN_PIPE_PACKETS: Final = 4  # the minimum window, in packets
FULL_BW_GROWTH: Final = 1.25  # bandwidth growth per round that means "still in STARTUP"
FULL_BW_ROUNDS: Final = 3  # rounds without such growth before the pipe counts as full
# STARTUP also ends after a round that lost more than this fraction of what it delivered while
# even its smallest RTT sample stood STARTUP_QUEUE_RTT above the minimum: loss with a standing
# queue is the bottleneck overflowing. (BBR v2 exits on loss alone, which random loss on a
# wireless hop would trigger at once; the round's minimum ignores delayed ACKs.)
STARTUP_LOSS_RATE: Final = 0.02
STARTUP_QUEUE_RTT: Final = 1.25
# ... and only when the round lost at least this many packets (the BBR v3 draft's
# BBRStartupFullLossCnt, which counts discontiguous lost ranges): a round of interactive traffic
# carries a packet or two, its minimum RTT is then a delayed ACK, and one loss would end STARTUP
# with btl_bw at a few KB/s, which the pacing rate follows once the pipe counts as filled.
STARTUP_FULL_LOSS_COUNT: Final = 6
# ACK aggregation (Linux bbr_extra_acked_*): the largest excess over the last 5-10 rounds (two
# slots of 5), added to the window at gain 1, at most 10 ms at the bottleneck rate. Linux allows
# 100 ms; between two processes on loopback that let the window of 8 bulk connections reach 20 MB
# at 500 MB/s, the RTT 32 ms and the sender 300 MiB, with drops at the receiving socket. 10 ms
# holds the bursts seen there (about 3 ms) with the window at 4-8 MB.
EXTRA_ACKED_WINDOW_ROUNDS: Final = 5
EXTRA_ACKED_MAX_TIME: Final = 0.01  # seconds
EXTRA_ACKED_RESET_PACKETS: Final = 1 << 20  # an epoch this long is restarted, however regular

STARTUP: Final = "startup"
DRAIN: Final = "drain"
PROBE_BW: Final = "probe_bw"
PROBE_RTT: Final = "probe_rtt"


class Bbr(CongestionController):
    def __init__(
        self, max_datagram_size: int, rng: Callable[[int], bytes] | None = None
    ) -> None:
        self.mss = max_datagram_size
        self._rng = rng
        self._cwnd = INITIAL_WINDOW_PACKETS * max_datagram_size
        self._initial_cwnd = self._cwnd
        self._pacing_rate: float | None = None  # bytes/s; None (unpaced) until an RTT sample
        self.state = STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self.btl_bw = 0.0  # bytes/s
        self._bw_samples: deque[tuple[int, float]] = deque()  # (round, rate), rates decreasing
        self.min_rtt = math.inf
        self.min_rtt_stamp = 0.0
        self.delivered = 0
        self.round_count = 0
        self.next_round_delivered = 0
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.filled_pipe = False
        self.cycle_index = 0
        self.cycle_stamp = 0.0
        self.probe_rtt_done: float | None = None
        self.probe_rtt_round_done = False
        self.prior_cwnd = 0
        self._srtt = 0.0
        self._loss_in_cycle = False
        self._round_lost = 0  # bytes lost in the current round
        self._round_lost_packets = 0
        self._round_delivered = 0  # bytes delivered in the current round
        self._round_min_rtt = math.inf  # seconds; smallest RTT sample of the current round
        # ACK aggregation: bytes acknowledged since the epoch began at `_epoch_start`, and the
        # largest excess over `btl_bw` seen in each of two slots of EXTRA_ACKED_WINDOW_ROUNDS
        self._epoch_acked = 0
        self._epoch_start = 0.0
        self._extra_acked = [0, 0]
        self._extra_slot = 0
        self._extra_rounds = 0

    @property
    def cwnd(self) -> int:
        return self._cwnd

    @property
    def pacing_rate(self) -> float | None:
        return self._pacing_rate

    def _set_pacing_rate(self) -> None:
        """BBRSetPacingRateWithGain (draft-cardwell-iccrg-bbr-congestion-control, Linux
        `bbr_set_pacing_rate`): the first RTT sample sets the rate to HIGH_GAIN x the initial
        window per SRTT (BBRInitPacingRate); from then on gain x btl_bw replaces it only when
        higher, or once the pipe is filled. Before that, btl_bw may come from a few app-limited
        bytes (a keystroke and its echo: a few KB/s) and pacing at it would hold the next bulk
        write back for seconds."""
        if self._pacing_rate is None:
            self._pacing_rate = HIGH_GAIN * self._initial_cwnd / self._srtt
        rate = self.pacing_gain * self.btl_bw
        if self.filled_pipe or rate > self._pacing_rate:
            self._pacing_rate = rate

    def _bdp(self, gain: float) -> int:
        if self.btl_bw <= 0 or self.min_rtt == math.inf:
            return INITIAL_WINDOW_PACKETS * self.mss
        # At least one timer tick's worth: the shell wakes about once a millisecond (uvloop's
        # timers) and handles a drain's ACKs at once, so a window of a 0.1 ms LAN path's real
        # BDP would sit empty between wakes.
        return int(gain * self.btl_bw * max(self.min_rtt, GRANULARITY))

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:
        pass

    def _update_bandwidth(self, sample: RateSample) -> bool:
        round_start = False
        if sample.prior_delivered >= self.next_round_delivered:
            self.next_round_delivered = self.delivered
            self.round_count += 1
            round_start = True
        rate = sample.delivery_rate
        if rate > 0 and (not sample.is_app_limited or rate >= self.btl_bw):
            samples = self._bw_samples
            while samples and samples[-1][1] <= rate:
                samples.pop()
            samples.append((self.round_count, rate))
        samples = self._bw_samples
        while samples and samples[0][0] <= self.round_count - BW_WINDOW_ROUNDS:
            samples.popleft()
        self.btl_bw = samples[0][1] if samples else self.btl_bw
        return round_start

    def _check_full_pipe(self, sample: RateSample) -> None:
        if self.filled_pipe or sample.is_app_limited:
            return
        if self.btl_bw >= self.full_bw * FULL_BW_GROWTH:
            self.full_bw = self.btl_bw
            self.full_bw_count = 0
            return
        self.full_bw_count += 1
        if self.full_bw_count >= FULL_BW_ROUNDS:
            self.filled_pipe = True

    def _enter_probe_bw(self, now: float) -> None:
        self.state = PROBE_BW
        self.cwnd_gain = CWND_GAIN
        # start in a random cruising phase (index 2..7) as the draft suggests, so flows sharing
        # a bottleneck do not probe in lockstep; the injected rng keeps tests deterministic
        offset = self._rng(1)[0] if self._rng is not None else self.round_count
        self.cycle_index = 2 + offset % 6
        self.pacing_gain = PROBE_BW_GAINS[self.cycle_index]
        self.cycle_stamp = now

    def _advance_cycle(self, bytes_in_flight: int, now: float) -> None:
        elapsed = now - self.cycle_stamp > self.min_rtt
        gain = self.pacing_gain
        if gain > 1:
            done = elapsed and (self._loss_in_cycle or bytes_in_flight >= self._bdp(gain))
        elif gain < 1:
            done = elapsed or bytes_in_flight <= self._bdp(1.0)
        else:
            done = elapsed
        if done:
            self.cycle_index = (self.cycle_index + 1) % len(PROBE_BW_GAINS)
            self.pacing_gain = PROBE_BW_GAINS[self.cycle_index]
            self.cycle_stamp = now
            self._loss_in_cycle = False

    def on_ack(
        self,
        acked: list[SentPacket],
        sample: RateSample,
        rtt: RttEstimator,
        bytes_in_flight: int,
        now: float,
    ) -> None:
        self._srtt = rtt.smoothed
        self.delivered += sample.newly_acked
        self._round_delivered += sample.newly_acked
        self._round_min_rtt = min(self._round_min_rtt, rtt.latest)
        round_start = self._update_bandwidth(sample)
        self._note_aggregation(sample.newly_acked, round_start, now)
        if round_start:
            if (
                self.state == STARTUP
                and self._round_lost > STARTUP_LOSS_RATE * self._round_delivered
                and self._round_lost_packets >= STARTUP_FULL_LOSS_COUNT
                and self._round_min_rtt > STARTUP_QUEUE_RTT * self.min_rtt
            ):
                self.filled_pipe = True  # the queue overflowed: bandwidth found
            self._round_lost = self._round_delivered = self._round_lost_packets = 0
            self._round_min_rtt = math.inf
        expired = now > self.min_rtt_stamp + MIN_RTT_WINDOW
        if rtt.latest <= self.min_rtt or expired:
            self.min_rtt = rtt.latest
            self.min_rtt_stamp = now
        if self.state == STARTUP and round_start:
            self._check_full_pipe(sample)
        if self.state == STARTUP and self.filled_pipe:
            self.state = DRAIN
            self.pacing_gain = 1 / HIGH_GAIN
            self.cwnd_gain = HIGH_GAIN
        if self.state == DRAIN and bytes_in_flight <= self._bdp(1.0):
            self._enter_probe_bw(now)
        if self.state == PROBE_BW:
            self._advance_cycle(bytes_in_flight, now)
        if self.state != PROBE_RTT and expired:
            self.state = PROBE_RTT
            self.pacing_gain = 1.0
            self.prior_cwnd = max(self.prior_cwnd, self._cwnd)
            self.probe_rtt_done = None
        if self.state == PROBE_RTT:
            self._handle_probe_rtt(round_start, bytes_in_flight, now)
        self._set_pacing_rate()
        self._set_cwnd(sample.newly_acked)

    def _handle_probe_rtt(self, round_start: bool, bytes_in_flight: int, now: float) -> None:
        if self.probe_rtt_done is None:
            if bytes_in_flight <= MIN_PIPE_PACKETS * self.mss:
                self.probe_rtt_done = now + PROBE_RTT_DURATION
                self.probe_rtt_round_done = False
                self.next_round_delivered = self.delivered
            return
        if round_start:
            self.probe_rtt_round_done = True
        if self.probe_rtt_round_done and now >= self.probe_rtt_done:
            self.min_rtt_stamp = now
            self._cwnd = max(self._cwnd, self.prior_cwnd)
            self.prior_cwnd = 0
            if self.filled_pipe:
                self._enter_probe_bw(now)
            else:
                self.state = STARTUP
                self.pacing_gain = self.cwnd_gain = HIGH_GAIN

    def _note_aggregation(self, acked: int, round_start: bool, now: float) -> None:
        """How far ACKs ran ahead of the bandwidth estimate in a burst. A receiver that
        acknowledges a batch at a time (GRO, a busy or descheduled process, Wi-Fi's aggregation)
        delivers in bursts with gaps between them, and a window of 2 x BDP (of the minimum RTT)
        runs dry in the gaps: on loopback, between two processes on two busy CPUs, the RTT
        under load was 3 ms against a 1 ms BDP floor and one connection moved 0.45-0.7x
        `ssh -L` with half the CPU idle. The window therefore also holds the largest excess of
        the last 5-10 rounds (Linux `bbr_update_ack_aggregation`; its cap is 100 ms, ours 10)."""
        if acked <= 0:
            return
        if round_start:
            self._extra_rounds += 1
            if self._extra_rounds >= EXTRA_ACKED_WINDOW_ROUNDS:
                self._extra_rounds = 0
                self._extra_slot ^= 1
                self._extra_acked[self._extra_slot] = 0
        expected = int(self.btl_bw * (now - self._epoch_start))
        if (self._epoch_acked <= expected
                or self._epoch_acked + acked >= EXTRA_ACKED_RESET_PACKETS * self.mss):
            # the ACKs fell behind the estimate (or the epoch is ancient): a new burst starts
            self._epoch_acked = 0
            self._epoch_start = now
            expected = 0
        self._epoch_acked += acked
        extra = min(self._epoch_acked - expected, self._cwnd)
        if extra > self._extra_acked[self._extra_slot]:
            self._extra_acked[self._extra_slot] = extra

    def aggregation_allowance(self) -> int:
        """Bytes the window holds for ACK aggregation (0 until the pipe is filled)."""
        if not self.filled_pipe:
            return 0
        return min(max(self._extra_acked), int(self.btl_bw * EXTRA_ACKED_MAX_TIME))

    def _set_cwnd(self, acked_bytes: int) -> None:
        target = self._bdp(self.cwnd_gain) + self.aggregation_allowance() + 3 * self.mss
        if self.filled_pipe:
            self._cwnd = min(self._cwnd + acked_bytes, target)
        elif self._cwnd < target or self.delivered < INITIAL_WINDOW_PACKETS * self.mss:
            self._cwnd += acked_bytes
        self._cwnd = max(self._cwnd, MIN_PIPE_PACKETS * self.mss)
        if self.state == PROBE_RTT:
            self._cwnd = min(self._cwnd, MIN_PIPE_PACKETS * self.mss)

    def on_loss(self, lost: list[SentPacket], bytes_in_flight: int, now: float) -> None:
        # BBR v1 does not cut its rate on loss: random loss is not congestion. Loss only ends a
        # bandwidth probe early so a full queue is not pushed harder.
        self._loss_in_cycle = True
        self._round_lost += sum(p.size for p in lost)
        self._round_lost_packets += len(lost)

    def on_persistent_congestion(self, now: float) -> None:
        self.prior_cwnd = max(self.prior_cwnd, self._cwnd)
        self._cwnd = MIN_PIPE_PACKETS * self.mss
        # a path that was down (a NAT reboot) does not come back with a window sized by the
        # bursts measured before the outage
        self._extra_acked = [0, 0]
        self._epoch_acked = 0
        self._epoch_start = now
