"""Channel efficiency table on the simulated link: goodput / link capacity, BBR beside NewReno.

`python -m bench.bench_channel` runs loss 0/0.5/1/2/5/10% x RTT 10/40/200 ms on a 50 Mbit/s link
whose queue holds one bandwidth-delay product (at least 16 packets), random loss each way, and
prints one table. Goodput is measured over a steady-state window after a warm-up (see
`goodput_fraction` in lab/netsim.py); the rate counts datagram payload (channel packet + 32
bytes of session overhead), so about 96% is the ceiling. Everything runs in virtual time and is
deterministic for a seed; wall time is only what the simulation costs.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from lab.netsim import goodput_fraction
from tunnel.channel.channel import Channel

LOSSES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.10)
RTTS = (0.010, 0.040, 0.200)


def measure(loss: float, rtt: float, congestion: str, quick: bool) -> float:
    # BBR's startup and drain take about ten round trips, then its startup losses must be
    # repaired before reads are steady again
    warmup = max(2.0, 25 * rtt)
    window = 2.0 if quick else 4.0
    (fraction,) = goodput_fraction(
        loss, rtt, congestion=congestion, warmup=warmup, measure=window
    )
    return fraction


def cpu_cost(total: int = 32 * 1024 * 1024, rtt: float = 0.01) -> float:
    """CPU microseconds per data packet for both channels together (sender and receiver, ACKs
    included): two channels on a lossless 10 ms path with no rate limit, the receiver reading
    everything. One `process_time` pair around the whole loop (a call costs ~1 us here, too
    much to wrap each channel call); the loop's own deque work is a few percent of it."""
    rng = random.Random(1).randbytes
    a, b = Channel(True, rng=rng), Channel(False, rng=rng)
    sid = a.open_stream()
    block = memoryview(bytes(65536))
    now, packets, received, offset = 0.0, 0, 0, 0
    to_b: deque[tuple[float, bytes]] = deque()
    to_a: deque[tuple[float, bytes]] = deque()
    started = time.process_time()
    while received < total:
        while to_a and to_a[0][0] <= now:
            a.receive_packet(to_a.popleft()[1], now)
        if offset < total:
            offset += a.write(sid, block[: min(len(block), total - offset)])
        deadline = a.get_timer()
        if deadline is not None and deadline <= now:
            a.handle_timer(now)
        out = a.packets_to_send(now)
        packets += len(out)
        to_b.extend((now + rtt / 2, p) for p in out)
        while to_b and to_b[0][0] <= now:
            b.receive_packet(to_b.popleft()[1], now)
        while chunk := b.read(sid):
            received += len(chunk)
        deadline = b.get_timer()
        if deadline is not None and deadline <= now:
            b.handle_timer(now)
        to_a.extend((now + rtt / 2, p) for p in b.packets_to_send(now))
        pending = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
        pending += [q[0][0] for q in (to_a, to_b) if q]
        now = max(now, min(pending))
    return (time.process_time() - started) / packets * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurement windows")
    parser.add_argument("--controllers", default="bbr,newreno", help="comma-separated")
    parser.add_argument("--cpu", action="store_true", help="only the CPU cost per packet")
    args = parser.parse_args(argv)
    both = cpu_cost()
    print(
        f"CPU per 1168-byte packet, both channels together: {both:.1f} us "
        f"({1168 / both:.0f} MB/s of stream data per core if one core ran both ends)"
    )
    if args.cpu:
        return 0
    controllers = args.controllers.split(",")
    started = time.perf_counter()
    header = "| loss | RTT | " + " | ".join(controllers) + " |"
    print("Goodput / capacity, 50 Mbit/s link, queue = 1 BDP, random loss each way")
    print(header)
    print("|" + "---|" * (2 + len(controllers)))
    for rtt in RTTS:
        for loss in LOSSES:
            cells = [f"{measure(loss, rtt, c, args.quick):6.1%}" for c in controllers]
            print(f"| {loss:4.1%} | {rtt * 1000:3.0f} ms | " + " | ".join(cells) + " |", flush=True)
    shares = goodput_fraction(0.0, 0.04, warmup=2.0, measure=4.0, flows=2)
    print(f"two BBR channels sharing the 40 ms link: {shares[0]:.1%} and {shares[1]:.1%}")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
