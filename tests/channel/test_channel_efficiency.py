"""Goodput floors on a simulated 50 Mbit/s link, 40 ms RTT, queue of one bandwidth-delay product.

Goodput is measured over a steady-state window (virtual seconds 2 to 5, after BBR's startup)
rather than over a long transfer, to keep wall time low; the link rate counts the datagram
payload (channel packet + 32 bytes of session overhead). Floors from issue 4: >= 90% at 0% loss,
>= 70% at 1%, >= 40% at 5%; two channels sharing the link each get >= 35%.
"""

from __future__ import annotations

import pytest

from lab.netsim import goodput_fraction

WARMUP = 2.0  # seconds of virtual time before measuring
MEASURE = 3.0  # seconds of virtual time measured


@pytest.mark.parametrize(("loss", "floor"), [(0.0, 0.90), (0.01, 0.70), (0.05, 0.40)])
def test_bbr_goodput_floor(loss: float, floor: float) -> None:
    (fraction,) = goodput_fraction(loss, 0.04, warmup=WARMUP, measure=MEASURE)
    assert fraction >= floor, f"goodput {fraction:.1%} < {floor:.0%} at {loss:.0%} loss"
    assert fraction <= 1.0  # cannot beat the link: the measurement itself is sane


def test_two_channels_share_the_link() -> None:
    shares = goodput_fraction(0.0, 0.04, warmup=WARMUP, measure=MEASURE, flows=2)
    assert min(shares) >= 0.35, shares
    assert sum(shares) <= 1.0


def test_newreno_is_selectable_and_fills_a_clean_link() -> None:
    (fraction,) = goodput_fraction(
        0.0, 0.04, congestion="newreno", warmup=WARMUP, measure=MEASURE
    )
    assert fraction >= 0.80


def test_cubic_is_selectable_and_fills_a_clean_link() -> None:
    (fraction,) = goodput_fraction(0.0, 0.04, congestion="cubic", warmup=WARMUP, measure=MEASURE)
    assert fraction >= 0.80
