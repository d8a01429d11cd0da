"""Channel efficiency table on the simulated link: goodput / link capacity, BBR beside NewReno.

`python -m bench.bench_channel` runs loss 0/0.5/1/2/5/10% x RTT 10/40/200 ms on a 50 Mbit/s link
whose queue holds one bandwidth-delay product (at least 16 packets), random loss each way, and
prints one table. Goodput is measured over a steady-state window after a warm-up (see
`goodput_fraction` in tests/netsim.py); the rate counts datagram payload (channel packet + 32
bytes of session overhead), so about 96% is the ceiling. Everything runs in virtual time and is
deterministic for a seed; wall time is only what the simulation costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netsim import goodput_fraction

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurement windows")
    parser.add_argument("--controllers", default="bbr,newreno", help="comma-separated")
    args = parser.parse_args(argv)
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
