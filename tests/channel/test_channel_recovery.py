"""RFC 9002 loss recovery, the pacer and the congestion controllers, driven by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lab.netsim import FlowApp, LinkConfig, Simulator, channel_pair
from tunnel.channel.channel import Channel
from tunnel.channel.congestion import create_controller
from tunnel.channel.congestion.bbr import HIGH_GAIN, PROBE_BW, STARTUP, Bbr
from tunnel.channel.congestion.lossbased import Cubic, NewReno
from tunnel.channel.constants import (
    INITIAL_RTT,
    INITIAL_WINDOW_PACKETS,
    MAX_ACK_DELAY,
    MAX_PTO_INTERVAL,
    MIN_SAMPLE,
    MINIMUM_WINDOW_PACKETS,
    PACING_MAX_BURST_PACKETS,
)
from tunnel.channel.events import StreamReadable
from tunnel.channel.pacing import Pacer
from tunnel.channel.recovery import LossRecovery, RateSample, RttEstimator, SentPacket

MSS = 1168


def sent(recovery: LossRecovery, pn: int, now: float) -> SentPacket:
    packet = SentPacket(pn, now, MSS, True, [])
    recovery.on_packet_sent(packet, now)
    return packet


def test_rtt_estimator_follows_rfc9002_section_5() -> None:
    rtt = RttEstimator()
    assert rtt.smoothed == INITIAL_RTT
    rtt.update(0.100, 0.0)
    assert (rtt.smoothed, rtt.rttvar, rtt.min_rtt) == (0.100, 0.050, 0.100)
    rtt.update(0.200, 0.010)  # ack delay is subtracted when that stays above min_rtt
    assert abs(rtt.smoothed - (0.875 * 0.100 + 0.125 * 0.190)) < 1e-12
    assert abs(rtt.rttvar - (0.75 * 0.050 + 0.25 * 0.090)) < 1e-12
    rtt.update(0.00005, 0.0)  # a LAN's 50 us is kept as it is, not floored at the granularity
    assert rtt.min_rtt == 0.00005
    rtt.update(0.0, 0.0)  # a zero sample would zero divisions: floored at MIN_SAMPLE
    assert rtt.min_rtt == MIN_SAMPLE


def test_packet_threshold_declares_loss() -> None:
    recovery = LossRecovery(NewReno(MSS), MAX_ACK_DELAY)
    for pn in range(6):
        sent(recovery, pn, 0.0)
    acked, lost = recovery.on_ack_received(((4, 5),), 0.0, 0.05)
    assert [p.packet_number for p in acked] == [4, 5]
    assert [p.packet_number for p in lost] == [0, 1, 2]  # 3 or more below the largest acked
    assert recovery.loss_time is not None  # 3 waits for the time threshold
    assert recovery.get_loss_detection_timer() == recovery.loss_time
    lost_later, probe = recovery.on_loss_detection_timeout(recovery.loss_time)
    assert [p.packet_number for p in lost_later] == [3] and not probe
    assert recovery.bytes_in_flight == 0


def test_pto_backs_off_and_is_capped() -> None:
    recovery = LossRecovery(NewReno(MSS), MAX_ACK_DELAY)
    sent(recovery, 0, 0.0)
    recovery.on_ack_received(((0, 0),), 0.0, 0.1)  # srtt 100 ms
    sent(recovery, 1, 0.1)
    intervals = []
    now = 0.1
    for _ in range(8):
        deadline = recovery.get_loss_detection_timer()
        assert deadline is not None
        intervals.append(deadline - now)
        now = deadline
        lost, probe = recovery.on_loss_detection_timeout(now)
        assert probe and not lost
    assert intervals[1] > intervals[0] * 1.9  # doubles
    assert max(intervals) <= MAX_PTO_INTERVAL + 1e-9  # ... until the cap


def test_ack_of_unknown_or_huge_ranges_is_harmless() -> None:
    recovery = LossRecovery(NewReno(MSS), MAX_ACK_DELAY)
    sent(recovery, 0, 0.0)
    acked, lost = recovery.on_ack_received(((5, 2**40),), 0.0, 0.1)  # nothing we sent
    assert not acked and not lost and recovery.bytes_in_flight == MSS
    acked, _ = recovery.on_ack_received(((0, 2**40),), 0.0, 0.1)
    assert [p.packet_number for p in acked] == [0]


def test_newreno_slow_start_then_halves_once_per_recovery() -> None:
    cc = NewReno(MSS)
    recovery = LossRecovery(cc, MAX_ACK_DELAY)
    start = cc.cwnd
    assert start == INITIAL_WINDOW_PACKETS * MSS
    packets = [sent(recovery, pn, 0.0) for pn in range(10)]
    recovery.on_ack_received(((0, 9),), 0.0, 0.1)
    assert cc.cwnd == 2 * start  # slow start: one MSS per MSS acknowledged
    cc.on_loss(packets[:1], 0, 0.2)
    halved = cc.cwnd
    assert halved == start
    cc.on_loss(packets[1:2], 0, 0.3)  # sent before the recovery began: no second cut
    assert cc.cwnd == halved
    cc.on_persistent_congestion(0.4)
    assert cc.cwnd == MINIMUM_WINDOW_PACKETS * MSS


def test_cubic_reduces_by_beta() -> None:
    cc = Cubic(MSS)
    packet = SentPacket(0, 0.0, MSS, True, [])
    before = cc.cwnd
    cc.on_loss([packet], 0, 0.1)
    assert cc.cwnd == int(before * 0.7)


def test_factory_rejects_unknown_names() -> None:
    assert isinstance(create_controller("bbr", MSS), Bbr)
    try:
        create_controller("vegas", MSS)
    except ValueError:
        pass
    else:
        raise AssertionError("accepted an unknown controller")


def test_pacer_allows_a_bounded_burst_then_spaces_packets() -> None:
    pacer = Pacer(MSS)
    rate = 1_000_000.0  # bytes/s: one packet every 1.168 ms
    now = 10.0
    burst = 0
    while pacer.send_time(now, rate) <= now:
        pacer.on_packet_sent(MSS)
        burst += 1
        assert burst < 100
    assert burst == 2  # PACING_BURST_TIME worth is 1.7 packets: the floor of 2
    next_time = pacer.send_time(now, rate)
    assert 0 < next_time - now <= MSS / rate + 1e-9


@pytest.mark.parametrize(("rate", "expected"), [(10e6, 17), (1e9, 176)])
def test_pacer_bursts_up_to_four_gso_sends_on_fast_paths(rate: float, expected: int) -> None:
    """2 ms of sending at 10 MB/s is 17 packets; at 1 GB/s the cap, 176 packets of 1,472
    bytes: four 64 KB GSO sends, 2 ms up to ~130 MB/s, so the bucket outlasts a timer that
    wakes a millisecond late."""
    pacer = Pacer(MSS)
    pacer.send_time(0.0, rate)
    now = 10.0  # long enough for a full bucket
    burst = 0
    while pacer.send_time(now, rate) <= now:
        pacer.on_packet_sent(MSS)
        burst += 1
    assert burst == expected


@pytest.mark.parametrize("rate", [20e6, 80e6])
def test_an_empty_bucket_wakes_the_sender_after_a_millisecond_of_sending(rate: float) -> None:
    """Not when the next packet's bytes are in (17 µs at 80 MB/s): uvloop runs a timer due in
    under 0.5 ms at once, so the sender woke at every turn of its loop for a few packets each
    (5,800 wakes a second, 9 packets a wake). Half the bucket at most, which a late wake does
    not overflow."""
    pacer = Pacer(MSS)
    now = 10.0
    while pacer.send_time(now, rate) <= now:
        pacer.on_packet_sent(MSS)
    wake = pacer.send_time(now, rate) - now
    assert wake >= 0.0005  # a real timer, not the next turn of the loop
    assert 1e-3 - MSS / rate < wake <= 1e-3
    assert pacer.send_time(now + wake, rate) == now + wake  # then it sends


def test_pacer_waits_for_the_packet_it_is_told_of_not_a_full_one() -> None:
    pacer = Pacer(65_000)  # path-MTU discovery found loopback's size
    rate = 1_000_000.0
    now = 10.0
    while pacer.send_time(now, rate) <= now:
        pacer.on_packet_sent(65_000)
    assert pacer.send_time(now, rate, 1168) == now + 1168 / rate  # the bucket is empty
    later = now + 1168 / rate
    assert pacer.send_time(later, rate, 1168) == later  # a window-sized packet may leave ...
    assert pacer.send_time(later, rate) > later  # ... a full one still waits
    assert pacer.send_time(later, rate, 10**6) == pacer.send_time(later, rate)  # at most a full


def test_pacer_batches_keep_the_rate() -> None:
    """Batches change when packets leave, not how many: over a second the pacer releases its
    rate, whatever the (late) times it is asked at."""
    pacer = Pacer(MSS)
    rate = 50e6
    now, sent_bytes = 0.0, 0
    pacer.send_time(now, rate)
    while now < 1.0:
        while pacer.send_time(now, rate) <= now:
            pacer.on_packet_sent(MSS)
            sent_bytes += MSS
        now = max(now + 0.0001, pacer.send_time(now, rate) + 0.0002)  # wakes 0.2 ms late
    assert 0.97 * rate <= sent_bytes <= rate + PACING_MAX_BURST_PACKETS * MSS


def test_bbr_finds_the_bottleneck_bandwidth() -> None:
    sim = Simulator(11)
    rate = 20e6
    link = LinkConfig(rate_bps=rate, delay=0.02, queue_bytes=int(rate * 0.04 / 8))
    source, sink = FlowApp(send=True), FlowApp()
    a, _, _, _ = channel_pair(sim, link, link, source, sink)
    source.on_wake(a, 0.0)
    sim.start()
    sim.run(4.0)
    bbr = a._cc
    assert isinstance(bbr, Bbr)
    assert bbr.state == PROBE_BW
    # the link carries channel packets plus 32 bytes each: the delivery rate of channel bytes
    assert 0.9 * rate / 8 * 1168 / 1200 <= bbr.btl_bw <= 1.05 * rate / 8
    assert 0.039 <= bbr.min_rtt <= 0.045


def start_bulk(
    sim: Simulator, forward: LinkConfig, backward: LinkConfig
) -> tuple[Channel, FlowApp]:
    """A channel sending as fast as it may over `forward` in 1,440-byte packets (its ACKs come
    back over `backward`), started: the sender and the receiving app."""
    source, sink = FlowApp(send=True), FlowApp()
    a, b, _, _ = channel_pair(sim, forward, backward, source, sink)
    for channel in (a, b):
        channel.set_max_packet_size(1440)
    source.on_wake(a, 0.0)
    sim.start()
    return a, sink


@pytest.mark.parametrize("one_way_delay", [0.00005, 0.0002, 0.002])
def test_bbr_fills_a_fast_path_whatever_its_rtt(one_way_delay: float) -> None:
    """A 100 MB/s path with a LAN's or loopback's 0.1 ms RTT: RTT samples and delivery-rate
    intervals floored at the 1 ms timer granularity made every rate sample 10x too low, and BBR
    followed them down to 3.6 MB/s (the NAT lab's 4 MB/s "AES-GCM collapse": the faster cipher
    was what shortened the RTT). The same flow at 0.4 and 4 ms RTT fills the link."""
    sim = Simulator(3)
    rate = 800e6
    link = LinkConfig(rate_bps=rate, delay=one_way_delay, queue_bytes=200_000)
    _, sink = start_bulk(sim, link, link)
    sim.run(0.5)
    goodput = sink.received_between(0.25, 0.5) / 0.25
    assert goodput >= 0.9 * rate / 8, f"{goodput / 1e6:.1f} MB/s of {rate / 8e6:.0f}"


@pytest.mark.parametrize("ack_period", [0.004, 0.008])
def test_bbr_fills_a_path_whose_acks_come_in_bursts(ack_period: float) -> None:
    """A 50 MB/s path of 0.1 ms RTT whose ACKs arrive in bursts, one burst every `ack_period` (a
    receiver scheduled once a period, as processes on busy CPUs are, or a Wi-Fi hop). A window
    of 2 x BDP ran dry between bursts, the delivery-rate samples fell with it, and BBR spiralled
    down to 2.1 and 0.8 MB/s. The window also holds what a burst delivers beyond the bandwidth
    estimate, so the link fills; once the bursts stop, that allowance goes within 10 rounds."""
    sim = Simulator(5)
    rate = 400e6
    forward = LinkConfig(rate_bps=rate, delay=0.00005, queue_bytes=4_000_000)
    acks = LinkConfig(delay=0.00005, batch=ack_period)
    a, sink = start_bulk(sim, forward, acks)
    sim.run(1.0)
    goodput = sink.received_between(0.5, 1.0) / 0.5
    assert goodput >= 0.9 * rate / 8, f"{goodput / 1e6:.1f} MB/s of {rate / 8e6:.0f}"
    bbr = a._cc
    assert isinstance(bbr, Bbr) and bbr.state == PROBE_BW
    # about one burst: a period's worth at the bottleneck rate (its cap is 10 ms' worth)
    burst = rate / 8 * ack_period
    assert 0.5 * burst <= bbr.aggregation_allowance() <= 2 * burst
    acks.batch = 0.0  # the receiver keeps up again: ACKs come as packets arrive
    sim.run(1.2)
    assert bbr.aggregation_allowance() < 0.25 * burst
    assert sink.received_between(1.1, 1.2) / 0.1 >= 0.9 * rate / 8


def test_bbr_aggregation_allowance_waits_for_a_filled_pipe_is_capped_and_forgotten() -> None:
    """None in STARTUP (which grows its window anyway), at most 10 ms at the bottleneck rate
    however large a burst (Linux's 100 ms let 8 loopback connections queue 20 MB, RTT 32 ms), and
    none after persistent congestion."""
    bbr = Bbr(MSS)
    rtt = RttEstimator()
    rtt.update(0.001, 0.0)
    now = 1.0
    bbr.on_ack([], RateSample(delivery_rate=1e8, newly_acked=MSS), rtt, 0, now)
    burst = RateSample(delivery_rate=1e8, newly_acked=8_000_000)  # 8 MB acknowledged at once,
    bbr.on_ack([], burst, rtt, 0, now + 0.0001)  # (a burst counts up to the window: this one
    bbr.on_ack([], burst, rtt, 0, now + 0.0002)  # grew it to 8 MB) twice
    assert bbr.btl_bw == 1e8 and not bbr.filled_pipe
    assert bbr.aggregation_allowance() == 0
    bbr.filled_pipe = True
    assert bbr.aggregation_allowance() == 1_000_000  # 10 ms of 100 MB/s, not the 8 MB burst
    # a path that was down (persistent congestion: a NAT reboot) starts measuring bursts anew
    bbr.on_persistent_congestion(now + 1.0)
    assert bbr.aggregation_allowance() == 0


def test_bbr_app_limited_samples_do_not_lower_the_initial_pacing_rate() -> None:
    """BBRInitPacingRate / BBRSetPacingRateWithGain: the first RTT sample sets the rate to
    HIGH_GAIN x initial window / SRTT, and until the pipe is filled a lower gain x btl_bw (here
    from one tiny app-limited sample, accepted because btl_bw was 0) does not replace it."""
    assert Bbr(MSS).pacing_rate is None  # the initial window goes out unpaced
    bbr = Bbr(MSS)
    rtt = RttEstimator()
    rtt.update(0.001, 0.0)
    packet = SentPacket(0, 0.0, 40, True, [])
    sample = RateSample(delivery_rate=40_000.0, is_app_limited=True, newly_acked=40)
    bbr.on_ack([packet], sample, rtt, 0, 0.001)
    assert bbr.btl_bw == 40_000.0
    initial = HIGH_GAIN * INITIAL_WINDOW_PACKETS * MSS / 0.001
    assert bbr.pacing_rate == initial
    bbr.filled_pipe = True  # once the pipe is filled, gain x btl_bw rules, lower or not
    bbr.on_ack([packet], sample, rtt, 0, 0.002)
    assert bbr.pacing_rate is not None and bbr.pacing_rate < initial


@dataclass
class Reader:
    """Reads every stream; echoes while `echo` is set; notes when `target` bytes arrived."""

    echo: bool = False
    received: int = 0
    target: int | None = None
    done: float | None = None

    def on_wake(self, channel: Channel, now: float) -> None:
        while (event := channel.next_event()) is not None:
            if isinstance(event, StreamReadable):
                while data := channel.read(event.stream_id):
                    self.received += len(data)
                    if self.echo:
                        channel.write(event.stream_id, data)
        if self.target is not None and self.done is None and self.received >= self.target:
            self.done = now


def bulk_after_trickle(congestion: str, packet_size: int, size: int = 100_000) -> float:
    """Virtual seconds until `size` bytes written after a one-byte echo arrive, 1 ms RTT."""
    sim = Simulator(5)
    link = LinkConfig(delay=0.0005)
    client, server = Reader(), Reader(echo=True)
    a, b, ia, _ = channel_pair(sim, link, link, client, server, congestion=congestion)
    for channel in (a, b):
        channel.set_max_packet_size(packet_size)  # path-MTU discovery on loopback: 65,000
    sid = a.open_stream()
    sim.start()
    a.write(sid, b"x")
    sim.wake(ia)
    sim.run(0.1)
    assert client.received == 1
    server.echo, server.received, server.target = False, 0, size
    start = sim.now
    a.write(sid, bytes(size))
    sim.wake(ia)
    sim.run(start + 10.0, stop=lambda: server.done is not None)
    assert server.done is not None, "the bulk write never arrived"
    return server.done - start


@pytest.mark.parametrize("packet_size", [1168, 64959])
def test_bbr_bulk_write_after_a_trickle_is_not_held_back(packet_size: int) -> None:
    """A byte each way left BBR pacing at ~17 KB/s: 100 KB in 65,000-byte packets then took
    2.6 s on a 1 ms path, as the pacer waited for a full packet's tokens. Now a few RTTs."""
    assert bulk_after_trickle("bbr", packet_size) < 0.01


def test_bbr_startup_ignores_a_lost_packet_of_interactive_traffic() -> None:
    """STARTUP's loss exit wants a queue that overflowed: a round that lost more than 2% with
    its RTT 1.25x the minimum. A keystroke's lost packet, in a round whose RTT sample carries a
    25 ms delayed ACK, looks like that on a 1 ms path; it must not end STARTUP (and with it the
    floor under the pacing rate) with btl_bw at a few KB/s. Six lost packets still do."""
    bbr = Bbr(MSS)
    rtt = RttEstimator()

    def ack(latest: float, prior: int, size: int, app_limited: bool, now: float) -> None:
        rtt.update(latest, 0.0)
        rate = size / latest
        sample = RateSample(rate, app_limited, prior_delivered=prior, newly_acked=size)
        bbr.on_ack([SentPacket(0, now - latest, size, True, [])], sample, rtt, 0, now)

    ack(0.001, 0, 40, True, 1.0)  # round 1: a keystroke, min_rtt 1 ms
    bbr.on_loss([SentPacket(1, 1.0, 40, True, [])], 0, 1.1)
    ack(0.026, 40, 40, True, 2.0)  # round 2: one of two lost, the other's ACK delayed
    assert (bbr.filled_pipe, bbr.state) == (False, STARTUP)
    lost = [SentPacket(pn, 2.0, MSS, True, []) for pn in range(2, 8)]
    bbr.on_loss(lost, 0, 2.1)
    ack(0.026, 80, 100 * MSS, False, 3.0)  # round 3: a burst overflowed the queue
    assert (bbr.filled_pipe, bbr.state) == (True, PROBE_BW)  # drained at once: nothing in flight


@pytest.mark.parametrize("seed", [0, 1])
def test_bbr_bulk_write_after_a_lossy_trickle_is_not_held_back(seed: int) -> None:
    """A hundred keystrokes echoed over a 20 ms path with 2% loss each way used to end STARTUP
    on the echoing side (see above); its 1.5 MB reply then took 1.1 to 1.6 s instead of 0.34 s
    (0.24 s is the 50 Mbit/s link's own time)."""
    sim = Simulator(seed)
    link = LinkConfig(rate_bps=50e6, delay=0.01, loss=0.02, queue_bytes=125_000)
    client, server = Reader(), Reader(echo=True)
    a, b, ia, ib = channel_pair(sim, link, link, client, server)
    sid = a.open_stream()
    sim.start()
    for _ in range(100):
        a.write(sid, b"ls -l\n")
        sim.wake(ia)
        sim.run(sim.now + 0.3)
    assert client.received == 600
    server.echo = False
    client.received, client.target = 0, 1_500_000
    start = sim.now
    assert b.write(sid, bytes(1_500_000)) == 1_500_000
    sim.wake(ib)
    sim.run(start + 10.0, stop=lambda: client.done is not None)
    assert client.done is not None and client.done - start < 0.6
