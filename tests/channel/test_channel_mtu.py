"""A path that proves larger datagrams mid-transfer (and one that falls back) loses nothing."""

from __future__ import annotations

import hashlib
import random

import pytest

from lab.netsim import BulkApp, LinkConfig, Simulator, channel_pair

SIZE = 4 * 1024 * 1024


@pytest.mark.parametrize("loss", [0.0, 0.02])
def test_packet_size_grows_then_shrinks_without_loss_of_data(loss: float) -> None:
    sim = Simulator(seed=7)
    payload = random.Random(7).randbytes(SIZE)
    sender, receiver = BulkApp(payload=payload), BulkApp()
    link = LinkConfig(rate_bps=200e6, delay=0.005, loss=loss, queue_packets=2000)
    a, b, _, _ = channel_pair(sim, link, link, sender, receiver, max_packet_size=1159)
    sender.start(a)
    receiver.start(b)
    sim.start()
    sim.run(0.1)
    small = a.stats()
    for channel in (a, b):
        channel.set_max_packet_size(8931)  # a jumbo-frame path proved itself
    sim.run(0.4)
    grown = a.stats()
    for channel in (a, b):
        channel.set_max_packet_size(1126)  # moved to the relay: back to the base size
    sim.run(60.0, stop=lambda: 0 in receiver.finished)
    assert 0 in receiver.finished
    assert receiver.digest(0) == hashlib.sha256(payload).digest()
    packets = grown.packets_sent - small.packets_sent
    assert packets > 0
    assert (grown.bytes_sent - small.bytes_sent) / packets > 4000  # large packets were built


@pytest.mark.parametrize(("congestion", "limit"), [("newreno", 0.14), ("bbr", 0.12)])
def test_window_smaller_than_one_large_packet_still_sends(congestion: str, limit: float) -> None:
    """cwnd starts at ten base-size packets: a 65,000-byte packet size must not stall it, nor
    may a window-sized packet wait for a full packet's pacing tokens (NewReno took 0.154 s)."""
    sim = Simulator(seed=3)
    payload = random.Random(3).randbytes(SIZE)
    sender, receiver = BulkApp(payload=payload), BulkApp()
    link = LinkConfig(rate_bps=1e9, delay=0.0001, queue_packets=4000)
    a, b, _, _ = channel_pair(sim, link, link, sender, receiver, max_packet_size=1159,
                              congestion=congestion)
    for channel in (a, b):
        channel.set_max_packet_size(64959)
    sender.start(a)
    receiver.start(b)
    sim.start()
    sim.run(30.0, stop=lambda: 0 in receiver.finished)
    assert receiver.digest(0) == hashlib.sha256(payload).digest()
    assert a.stats().packets_sent < SIZE // 8000  # large packets carried it
    assert sim.now < limit  # 4 MiB at 1 Gbit/s is 0.034 s
