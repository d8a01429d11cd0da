"""10 MiB each way arrive intact (SHA-256) and the channel closes cleanly: loss 0/1/5/20 % x
RTT 1/40/200 ms on a 100 Mbit/s link with a queue of one bandwidth-delay product (at least 64
packets). Virtual time.
"""

from __future__ import annotations

import pytest

from lab.netsim import LinkConfig, exchange

RATE = 100e6  # bits/s


@pytest.mark.parametrize("rtt", [0.001, 0.04, 0.2])
@pytest.mark.parametrize("loss", [0.0, 0.01, 0.05, 0.2])
def test_ten_mib_each_way_intact(loss: float, rtt: float) -> None:
    queue = max(int(RATE * rtt / 8), 64 * 1200)
    link = LinkConfig(rate_bps=RATE, delay=rtt / 2, loss=loss, queue_bytes=queue)
    result = exchange(link, seed=int(loss * 1000 + rtt * 1000))
    assert result.intact
    assert result.closed_cleanly
    assert result.client.stats().stream_bytes_sent == 10 * 1024 * 1024
    if loss:
        assert result.client.stats().packets_lost > 0  # the loss really happened
