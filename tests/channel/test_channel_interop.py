"""The QUIC interop runner's network scenarios, reproduced on the simulated link.

The runner's topology (quic-interop-runner, ns-3 `simple-p2p`): 10 Mbit/s, 15 ms one-way delay,
a 25-packet drop-tail queue. Each scenario must deliver intact data:
handshake loss (30% each way, bursts up to 3; 50 connections), transfer loss (2% each way,
bursts of 3), the same rates of corruption (dropped by a real AEAD, never parsed), a blackhole of
5 s on / 2 s off during a transfer, and the client's address changing at 1 s and every 5 s after.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from lab.netsim import BulkApp, LinkConfig, SealedEndpoint, Simulator, channel_pair, exchange
from tunnel.channel.channel import Channel
from tunnel.channel.constants import DEFAULT_MAX_PACKET_SIZE, SESSION_OVERHEAD
from tunnel.channel.events import StreamOpened, StreamReadable
from tunnel.session.wire import TRANSPORT_OVERHEAD

RATE = 10e6  # bits/s
DELAY = 0.015  # seconds, one way
QUEUE = 25  # packets
SIZE = 2 * 1024 * 1024  # bytes each way per transfer scenario (about 1.7 s at 10 Mbit/s)


def burst_start_probability(loss: float, mean_burst: float) -> float:
    """Loss events starting with probability q and dropping `mean_burst` packets on average lose
    a fraction 2q/(1+q) for bursts of 1..3 (mean 2): solve for q so the fraction is `loss`."""
    return loss / (mean_burst - loss * (mean_burst - 1))


def interop_link(**changes: object) -> LinkConfig:
    config = LinkConfig(rate_bps=RATE, delay=DELAY, queue_packets=QUEUE)
    for name, value in changes.items():
        setattr(config, name, value)
    return config


@dataclass
class Requester:
    """Opens a stream, sends a request, expects it echoed back."""

    request: bytes
    stream: int | None = None
    response: bytearray = field(default_factory=bytearray)
    done: bool = False

    def on_wake(self, channel: Channel, now: float) -> None:
        if self.stream is None:
            self.stream = channel.open_stream()
            assert channel.write(self.stream, self.request) == len(self.request)
            channel.shutdown_write(self.stream)
        while (event := channel.next_event()) is not None:
            if isinstance(event, StreamReadable):
                self.response += channel.read(event.stream_id)
                self.done = channel.is_eof(event.stream_id)


@dataclass
class Echoer:
    pending: dict[int, bytearray] = field(default_factory=dict)

    def on_wake(self, channel: Channel, now: float) -> None:
        while (event := channel.next_event()) is not None:
            if isinstance(event, StreamOpened):
                self.pending[event.stream_id] = bytearray()
            elif isinstance(event, StreamReadable):
                sid = event.stream_id
                self.pending[sid] += channel.read(sid)
                if channel.is_eof(sid):
                    assert channel.write(sid, bytes(self.pending[sid])) == len(self.pending[sid])
                    channel.shutdown_write(sid)


def test_handshake_loss_50_connections_all_succeed() -> None:
    q = burst_start_probability(0.30, 2.0)
    lost = offered = 0
    for seed in range(50):
        sim = Simulator(seed)
        link = interop_link(loss=q, loss_burst=3)
        request = random.Random(seed).randbytes(300)
        client, server = Requester(request), Echoer()
        a, _, _, _ = channel_pair(sim, link, link, client, server)
        client.on_wake(a, 0.0)
        sim.start()
        end = sim.run(60.0, stop=lambda client=client: client.done)  # type: ignore[misc]
        assert client.done, f"connection {seed} did not complete"
        assert bytes(client.response) == request
        assert end < 30.0  # bounded: PTO backoff is capped at 1 s
        for endpoint_link in (sim._routes[0], sim._routes[1]):
            assert endpoint_link is not None
            lost += endpoint_link[0].stats.lost
            offered += endpoint_link[0].stats.offered
    assert lost > 0.15 * offered  # the scenario really was lossy


def test_transfer_loss_two_percent_bursts_of_three() -> None:
    q = burst_start_probability(0.02, 2.0)
    result = exchange(interop_link(loss=q, loss_burst=3), size=SIZE, seed=7)
    assert result.intact and result.closed_cleanly
    assert result.client.stats().packets_lost > 0


def test_corruption_dropped_by_aead_nothing_delivered_wrong() -> None:
    q = burst_start_probability(0.02, 2.0)
    result = exchange(interop_link(corrupt=q, corrupt_burst=3), size=SIZE, seed=8, sealed=True)
    assert result.intact and result.closed_cleanly
    rejected = sum(e.rejected for e in result.sim.endpoints if isinstance(e, SealedEndpoint))
    corrupted = sum(r[0].stats.corrupted for r in result.sim._routes if r is not None)
    assert corrupted > 20 and rejected == corrupted  # each corrupted packet failed the tag
    # and the channels never saw a malformed packet: the AEAD caught everything first
    assert result.client.stats().packets_dropped == 0


def test_sealed_channel_lives_through_rekeys() -> None:
    # The real session rekeys every 2 minutes and refuses keys older than 3: the handshakes run
    # over the simulated link, and the channel goes on working after several of them.
    sim = Simulator(13)
    link = interop_link(loss=0.01)
    app_a, app_b = BulkApp(), BulkApp()
    a, b, index_a, _ = channel_pair(sim, link, link, app_a, app_b, sealed=True)
    sim.start()
    sim.run(400.0)  # idle: only the channel's own keepalive PINGs
    assert a.is_open and b.is_open
    for end in (e for e in sim.endpoints if isinstance(e, SealedEndpoint)):
        assert end.device.counters.handshakes_completed >= 4  # at 0, ~120, ~240, ~360 s
        assert end.device.counters.handshakes_failed == 0
    sid = a.open_stream()
    message = b"still sealed after three rekeys" * 100
    assert a.write(sid, message) == len(message)
    a.shutdown_write(sid)
    sim.wake(index_a)
    sim.run(sim.now + 5.0, stop=lambda: sid in app_b.finished)
    assert app_b.digest(sid) == hashlib.sha256(message).digest()


def test_channel_budget_matches_the_session_overhead() -> None:
    assert TRANSPORT_OVERHEAD == SESSION_OVERHEAD
    assert DEFAULT_MAX_PACKET_SIZE + TRANSPORT_OVERHEAD == 1200


def test_blackhole_five_seconds_on_two_off() -> None:
    def blackhole(now: float) -> bool:
        return now >= 0.5 and (now - 0.5) % 7.0 < 5.0

    link = interop_link(blackhole=blackhole)
    result = exchange(link, size=SIZE, seed=9, limit=120.0)
    assert result.intact and result.closed_cleanly
    assert result.finish_time > 5.5  # it really had to survive at least one blackhole


def test_address_change_at_one_second_then_every_five() -> None:
    def rebind(sim: Simulator, now: float) -> None:
        if round(now, 6) == 1.0 or (now > 1.0 and round(now - 1.0, 6) % 5.0 == 0.0):
            sim.rebind(0)  # the client (endpoint 0) moves; the server follows its packets

    result = exchange(interop_link(), size=4 * SIZE, seed=10, every=(0.5, rebind))
    assert result.intact and result.closed_cleanly
    assert result.sim.rebinds >= 2 and result.sim.stale_drops > 0


def test_reordering_duplication_and_jitter() -> None:
    link = interop_link(
        loss=0.01, jitter=0.005, reorder=0.05, reorder_delay=0.02, duplicate=0.02
    )
    result = exchange(link, size=SIZE, seed=11)
    assert result.intact and result.closed_cleanly
    links = [r[0].stats for r in result.sim._routes if r is not None]
    assert sum(s.duplicated for s in links) > 20
    # duplicates are recognised by packet number and dropped before any frame is applied
    assert result.client.stats().packets_dropped + result.server.stats().packets_dropped > 20


def test_both_ends_close_at_once() -> None:
    sim = Simulator(12)
    client, server = Requester(b"x" * 100), Echoer()
    a, b, ia, ib = channel_pair(sim, interop_link(), interop_link(), client, server)
    client.on_wake(a, 0.0)
    sim.start()
    sim.run(5.0, stop=lambda: client.done)
    a.close("client done")
    b.close("server done")
    sim.wake(ia)
    sim.wake(ib)
    sim.run(sim.now + 10.0)
    assert a.is_closed and b.is_closed
