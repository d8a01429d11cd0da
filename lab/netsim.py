"""A discrete-event network simulator on virtual time, for tests and benchmarks.

Endpoints are sans-IO state machines behind one small interface (`Endpoint`): the simulator feeds
them packets, drains what they want to send, and fires their timers, all on a virtual clock, so a
30-second timeout runs in microseconds and every run with the same seed is identical.

A `Link` is one direction of a path: a serialisation rate with a finite tail-drop queue (packets
or bytes), one-way delay, jitter, random or bursty loss (a burst count or Gilbert-Elliott),
duplication, reordering, corruption, and a blackhole schedule. Several flows may share one Link
object (they then share its queue and rate). Any randomness comes from a seeded `random.Random`.

Adapters at the bottom wrap a `tunnel.channel.channel.Channel` (`ChannelEndpoint`), optionally
sealed by the real secure session (`SealedEndpoint`: two `tunnel.session` devices complete a real
handshake in memory, then every packet goes through `Session.seal` and
`Device.receive_transport`), so a corrupted packet is dropped by the product's own code, plus a
bulk-transfer application used by the channel tests and `bench/bench_channel.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tunnel.addresses import Addr
from tunnel.channel.channel import Channel
from tunnel.channel.events import (
    ChannelClosed,
    StreamOpened,
    StreamReadable,
    StreamWritable,
)
from tunnel.session.crypto import generate_private_key
from tunnel.session.device import Device
from tunnel.session.session import Session, SessionConfig
from tunnel.session.wire import MESSAGE_TRANSPORT

INF = float("inf")


class Endpoint(Protocol):
    def receive(self, data: bytes, now: float) -> None: ...

    def to_send(self, now: float) -> list[bytes]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


@dataclass
class LinkConfig:
    rate_bps: float | None = None  # bits/s of datagram payload; None = infinitely fast
    delay: float = 0.0  # seconds, one way
    jitter: float = 0.0  # seconds, uniform extra delay (order preserved unless `reorder`)
    loss: float = 0.0  # probability a loss burst starts at a packet
    loss_burst: int = 1  # a burst drops 1..loss_burst consecutive packets (uniformly)
    gilbert: tuple[float, float, float] | None = None  # (p good->bad, p bad->good, loss in bad)
    duplicate: float = 0.0  # probability a packet is delivered twice
    reorder: float = 0.0  # probability a packet takes `reorder_delay` longer (and is overtaken)
    reorder_delay: float = 0.0
    queue_packets: int | None = None  # tail-drop limit, packets waiting or in service
    queue_bytes: int | None = None  # tail-drop limit in bytes
    corrupt: float = 0.0  # probability a corruption burst starts
    corrupt_burst: int = 1
    blackhole: Callable[[float], bool] | None = None  # True while the path drops everything
    overhead: int = 32  # bytes each packet adds on the wire (the session's header and tag)
    # seconds; > 0: packets arrive only at multiples of this, in bursts (ACK aggregation: a
    # receiver that is scheduled, or a Wi-Fi hop that transmits, once per period)
    batch: float = 0.0


@dataclass
class LinkStats:
    offered: int = 0
    delivered: int = 0
    lost: int = 0
    queue_drops: int = 0
    blackholed: int = 0
    corrupted: int = 0
    duplicated: int = 0
    bytes_delivered: int = 0


class Link:
    """One direction of a path. `transmit` decides a packet's fate and delivery times."""

    def __init__(self, config: LinkConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.stats = LinkStats()
        self._busy_until = 0.0  # when the serialiser is free again
        self._departures: deque[tuple[float, int]] = deque()  # (departure time, bytes) queued
        self._queued_bytes = 0
        self._loss_left = 0  # packets still to drop in the current burst
        self._corrupt_left = 0
        self._bad = False  # Gilbert-Elliott state
        self._last_arrival = 0.0

    def _lose(self) -> bool:
        c = self.config
        if c.gilbert is not None:
            p_gb, p_bg, loss_bad = c.gilbert
            self._bad = (self.rng.random() >= p_bg) if self._bad else (self.rng.random() < p_gb)
            return self._bad and self.rng.random() < loss_bad
        if self._loss_left:
            self._loss_left -= 1
            return True
        if c.loss and self.rng.random() < c.loss:
            self._loss_left = self.rng.randint(1, c.loss_burst) - 1
            return True
        return False

    def _corrupt(self) -> bool:
        c = self.config
        if self._corrupt_left:
            self._corrupt_left -= 1
            return True
        if c.corrupt and self.rng.random() < c.corrupt:
            self._corrupt_left = self.rng.randint(1, c.corrupt_burst) - 1
            return True
        return False

    def transmit(self, size: int, now: float) -> tuple[list[float], bool]:
        """Return (delivery times, corrupted); no times when the packet is dropped."""
        c = self.config
        stats = self.stats
        stats.offered += 1
        if c.blackhole is not None and c.blackhole(now):
            stats.blackholed += 1
            return [], False
        wire = size + c.overhead
        departure = now
        if c.rate_bps is not None:
            departures = self._departures
            while departures and departures[0][0] <= now:
                self._queued_bytes -= departures.popleft()[1]
            if (c.queue_packets is not None and len(departures) >= c.queue_packets) or (
                c.queue_bytes is not None and self._queued_bytes + wire > c.queue_bytes
            ):
                stats.queue_drops += 1
                return [], False
            start = self._busy_until if self._busy_until > now else now
            departure = start + wire * 8 / c.rate_bps
            self._busy_until = departure
            departures.append((departure, wire))
            self._queued_bytes += wire
        if self._lose():  # lost on the wire after the bottleneck: it used its share of rate
            stats.lost += 1
            return [], False
        arrival = departure + c.delay
        if c.jitter:
            arrival += self.rng.random() * c.jitter
            if arrival < self._last_arrival:
                arrival = self._last_arrival  # jitter alone never reorders
        if c.batch:
            arrival = math.ceil(arrival / c.batch) * c.batch
        if c.reorder and self.rng.random() < c.reorder:
            arrival += c.reorder_delay
        else:
            self._last_arrival = arrival
        corrupted = self._corrupt()
        if corrupted:
            stats.corrupted += 1
        stats.delivered += 1
        stats.bytes_delivered += size
        if c.duplicate and self.rng.random() < c.duplicate:
            stats.duplicated += 1
            return [arrival, arrival + self.rng.random() * 0.001], corrupted
        return [arrival], corrupted


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    """Corrupt 1-3 random bits of a packet."""
    raw = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(raw))
        raw[i] ^= 1 << rng.randrange(8)
    return bytes(raw)


_DELIVER, _TIMER = 0, 1


class Simulator:
    """Endpoints joined by links; `run` advances virtual time event by event."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, int, int, bytes]] = []
        self._seq = 0
        self._endpoints: list[Endpoint] = []
        self._routes: list[tuple[Link, int] | None] = []
        self._timers: list[float | None] = []
        self.rebinds = 0
        self.stale_drops = 0
        self._stale: set[int] = set()  # endpoints whose peer still sends to their old address
        self._peer_of: dict[int, int] = {}
        self.events = 0

    @property
    def endpoints(self) -> list[Endpoint]:
        return self._endpoints

    def link(self, config: LinkConfig) -> Link:
        return Link(config, random.Random(self.rng.getrandbits(64)))

    def add(self, endpoint: Endpoint) -> int:
        self._endpoints.append(endpoint)
        self._routes.append(None)
        self._timers.append(None)
        return len(self._endpoints) - 1

    def route(self, source: int, link: Link, destination: int) -> None:
        self._routes[source] = (link, destination)

    def connect(self, a: Endpoint, b: Endpoint, ab: Link, ba: Link) -> tuple[int, int]:
        ia, ib = self.add(a), self.add(b)
        self.route(ia, ab, ib)
        self.route(ib, ba, ia)
        self._peer_of[ia], self._peer_of[ib] = ib, ia
        return ia, ib

    def rebind(self, index: int) -> None:
        """The endpoint's address changes (a NAT rebinding): packets in flight to the old address
        are lost; the peer learns the new address from the next packet (the channel itself is
        address-agnostic, so that is all a rebinding does to it)."""
        self.rebinds += 1
        before = len(self._heap)
        self._heap = [e for e in self._heap if not (e[2] == _DELIVER and e[3] == index)]
        self.stale_drops += before - len(self._heap)
        heapq.heapify(self._heap)
        self._stale.add(index)

    def wake(self, index: int) -> None:
        """Let an endpoint send after the test acted on it from outside (e.g. an app read)."""
        self._poke(index)

    def start(self) -> None:
        for index in range(len(self._endpoints)):
            self._poke(index)

    def _push(self, when: float, kind: int, index: int, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, index, data))

    def _poke(self, index: int) -> None:
        """After an endpoint changed state: send what it wants to, re-arm its timer."""
        endpoint = self._endpoints[index]
        now = self.now
        packets = endpoint.to_send(now)
        if packets:
            route = self._routes[index]
            if route is not None:
                link, destination = route
                if destination in self._stale:  # sent to the old address: lost
                    self.stale_drops += len(packets)
                    packets = []
                for packet in packets:
                    times, corrupted = link.transmit(len(packet), now)
                    if corrupted and times:
                        packet = flip_bits(packet, link.rng)
                    for when in times:
                        self._push(when, _DELIVER, destination, packet)
        deadline = endpoint.get_timer()
        if deadline != self._timers[index]:
            self._timers[index] = deadline
            if deadline is not None:
                self._push(deadline, _TIMER, index, b"")

    def run(
        self,
        until: float,
        stop: Callable[[], bool] | None = None,
        every: tuple[float, Callable[[float], None]] | None = None,
    ) -> float:
        """Run until virtual time `until`, or until `stop()` is true (checked after each event).
        `every=(period, hook)` calls hook(now) on a fixed virtual schedule (rebinds, probes)."""
        heap = self._heap
        next_hook = self.now + every[0] if every else INF
        timers = self._timers
        endpoints = self._endpoints
        spins = 0
        while True:
            heap = self._heap
            if not heap:
                break
            when, _, kind, index, data = heap[0]
            if every is not None and next_hook <= when and next_hook <= until:
                self.now = next_hook
                every[1](next_hook)
                next_hook += every[0]
                continue
            if when > until:
                break
            heapq.heappop(heap)
            if kind == _TIMER:
                if timers[index] != when:
                    continue  # superseded
                timers[index] = None
                if when > self.now:
                    self.now = when
                    spins = 0
                else:
                    spins += 1
                    if spins > 100_000:
                        raise RuntimeError("an endpoint's timer does not advance")
                endpoints[index].handle_timer(self.now)
            else:
                if when > self.now:
                    self.now = when
                if self._stale:  # the peer hears from the new address and replies there
                    self._stale.discard(self._peer_of.get(index, -1))
                endpoints[index].receive(data, self.now)
            self.events += 1
            self._poke(index)
            if stop is not None and stop():
                break
        if not self._heap or self._heap[0][0] > until:
            self.now = max(self.now, until) if until != INF else self.now
        return self.now


# --- adapters for the channel -----------------------------------------------------------------


class App(Protocol):
    def on_wake(self, channel: Channel, now: float) -> None: ...


class ChannelEndpoint:
    """A Channel behind the simulator's interface; `app.on_wake` runs after every input."""

    def __init__(self, channel: Channel, app: App | None = None) -> None:
        self.channel = channel
        self.app = app

    def receive(self, data: bytes, now: float) -> None:
        self.channel.receive_packet(data, now)
        if self.app is not None:
            self.app.on_wake(self.channel, now)

    def to_send(self, now: float) -> list[bytes]:
        return self.channel.packets_to_send(now)

    def get_timer(self) -> float | None:
        return self.channel.get_timer()

    def handle_timer(self, now: float) -> None:
        self.channel.handle_timer(now)
        if self.app is not None:
            self.app.on_wake(self.channel, now)


# What the sealed ends' sessions see: wall-clock time (for the TAI64N timestamps of initiations)
# at virtual time 0, and each end's address (the simulator routes by index, not by address).
WALL_EPOCH = 1_700_000_000.0
_ADDR_A: Addr = ("192.0.2.1", 51820)
_ADDR_B: Addr = ("192.0.2.2", 51820)


class SealedEndpoint:
    """An endpoint whose packets travel sealed by a real secure session, as in the node.

    Outgoing packets go through `Session.seal`; incoming transport datagrams through
    `Device.receive_transport` (ChaCha20-Poly1305 with the handshake's keys, the replay window),
    anything else through `Device.receive_datagram`. A corrupted datagram is therefore dropped,
    and counted in `device.counters`, by the session layer's own code before the inner endpoint
    sees it. The device's own datagrams (rekey handshakes, keepalives, payloads staged while keys
    were missing) and timers run in the simulation too. Build pairs with `sealed_pair`.
    """

    def __init__(
        self, inner: Endpoint, device: Device, peer_public: bytes, peer_addr: Addr
    ) -> None:
        session = device.get_session(peer_public)
        if session is None or not session.is_established:
            raise ValueError("no established session with that peer: use sealed_pair")
        self.inner = inner
        self.device = device
        self.session: Session = session
        self._peer_addr = peer_addr

    @property
    def rejected(self) -> int:
        """Datagrams the session layer dropped, for any reason (bad tag, unknown index, ...)."""
        c = self.device.counters
        handshakes = c.bad_mac1 + c.queue_full + c.rate_limited + c.bad_handshake + c.bad_cookie
        peers = c.not_allowed + c.flood + c.unknown_index
        transport = c.stale + c.bad_tag + c.replay
        return c.malformed + c.not_ours + handshakes + peers + transport

    def receive(self, data: bytes, now: float) -> None:
        if data[:1] == bytes((MESSAGE_TRANSPORT,)):
            result = self.device.receive_transport(data, self._peer_addr, now)
            if result is not None and result[1]:  # an empty payload is a keepalive
                self.inner.receive(result[1], now)
        else:
            self.device.receive_datagram(data, self._peer_addr, now, WALL_EPOCH + now)
        self._discard_events()

    def to_send(self, now: float) -> list[bytes]:
        sealed = [
            datagram
            for packet in self.inner.to_send(now)
            if (datagram := self.session.seal(packet, now)) is not None  # None: staged
        ]
        # The device's queue holds what was due earlier (handshakes, staged payloads): first.
        return [datagram for datagram, _ in self.device.datagrams_to_send()] + sealed

    def get_timer(self) -> float | None:
        deadlines = [d for d in (self.inner.get_timer(), self.device.get_timer()) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        deadline = self.device.get_timer()
        if deadline is not None and deadline <= now:
            self.device.handle_timer(now, WALL_EPOCH + now)
            self._discard_events()
        deadline = self.inner.get_timer()
        if deadline is not None and deadline <= now:
            self.inner.handle_timer(now)

    def _discard_events(self) -> None:
        # Handshake results; `device.counters` keeps score (handshakes_completed, _failed).
        while self.device.next_event() is not None:
            pass


def _handshake(initiator: Device, responder: Device, now: float) -> None:
    """Run a real handshake between two devices in memory, until both have confirmed keys."""
    wall = WALL_EPOCH + now
    initiator.connect(responder.public_key, [_ADDR_B], now, wall)
    ends = ((initiator, responder, _ADDR_A), (responder, initiator, _ADDR_B))
    for _ in range(8):  # initiation, response, then the keepalive that confirms the keys
        for device, peer, source in ends:
            for datagram, _ in device.datagrams_to_send():
                peer.receive_datagram(datagram, source, now, wall)
            deadline = device.get_timer()
            if deadline is not None and deadline <= now:
                device.handle_timer(now, wall)  # handshake messages are worked off here
        sessions = (
            initiator.get_session(responder.public_key),
            responder.get_session(initiator.public_key),
        )
        if all(s is not None and s.is_established for s in sessions):
            break
    else:
        raise RuntimeError("the in-memory handshake did not complete")
    for device in (initiator, responder):
        while device.next_event() is not None:
            pass


def sealed_pair(
    a: Endpoint,
    b: Endpoint,
    seed: int,
    now: float = 0.0,
    config: SessionConfig | None = None,
) -> tuple[SealedEndpoint, SealedEndpoint]:
    """Seal `a` and `b` with two devices (keys and all randomness from `seed`) that complete a
    real handshake at virtual time `now`, `a` initiating."""
    rng = random.Random(seed)
    psk = rng.randbytes(32)
    devices = []
    for _ in range(2):
        device_rng = random.Random(rng.getrandbits(64)).randbytes
        devices.append(Device(generate_private_key(device_rng), psk, rng=device_rng, config=config))
    device_a, device_b = devices
    _handshake(device_a, device_b, now)
    return (
        SealedEndpoint(a, device_a, device_b.public_key, _ADDR_B),
        SealedEndpoint(b, device_b, device_a.public_key, _ADDR_A),
    )


@dataclass
class BulkApp:
    """Sends `payload` on one stream it opens (if any), reads every stream the peer opens into a
    SHA-256, optionally echoes, and tracks goodput over time."""

    payload: bytes = b""
    streams: int = 1  # how many streams to split `payload` across (client side)
    read: bool = True  # False: a reader that stops reading
    echo: bool = False  # write back what is read (server of a request/response exchange)
    received: dict[int, hashlib._Hash] = field(default_factory=dict)
    received_bytes: dict[int, int] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    closed: ChannelClosed | None = None
    total_received: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (now, total_received)
    _outgoing: dict[int, memoryview] = field(default_factory=dict)
    _started: bool = False
    _echo_fin: set[int] = field(default_factory=set)

    def start(self, channel: Channel) -> None:
        self._started = True
        if not self.payload:
            return
        view = memoryview(self.payload)
        chunk = -(-len(view) // self.streams)
        for i in range(self.streams):
            sid = channel.open_stream()
            self._outgoing[sid] = view[i * chunk : (i + 1) * chunk]
            self._push(channel, sid)

    def _push(self, channel: Channel, sid: int) -> None:
        rest = self._outgoing.get(sid)
        if rest is None:
            return
        if rest:
            accepted = channel.write(sid, rest)
            rest = rest[accepted:]
            self._outgoing[sid] = rest
        if not rest and sid not in self._echo_fin:
            del self._outgoing[sid]
            channel.shutdown_write(sid)

    def on_wake(self, channel: Channel, now: float) -> None:
        if not self._started:
            self.start(channel)
        while (event := channel.next_event()) is not None:
            if isinstance(event, StreamOpened):
                self.received.setdefault(event.stream_id, hashlib.sha256())
            elif isinstance(event, StreamReadable) and self.read:
                self._drain(channel, event.stream_id, now)
            elif isinstance(event, StreamWritable):
                self._push(channel, event.stream_id)
            elif isinstance(event, ChannelClosed):
                self.closed = event

    def _drain(self, channel: Channel, sid: int, now: float) -> None:
        digest = self.received.setdefault(sid, hashlib.sha256())
        while data := channel.read(sid):
            digest.update(data)
            self.received_bytes[sid] = self.received_bytes.get(sid, 0) + len(data)
            self.total_received += len(data)
            if self.echo:
                self._outgoing[sid] = memoryview(
                    bytes(self._outgoing.get(sid, memoryview(b""))) + data
                )
                self._echo_fin.add(sid)
                self._push(channel, sid)
        self.samples.append((now, self.total_received))
        if channel.is_eof(sid):
            self.finished.add(sid)
            if self.echo:
                self._echo_fin.discard(sid)
                self._outgoing.setdefault(sid, memoryview(b""))
                self._push(channel, sid)

    def digest(self, sid: int) -> bytes:
        return self.received[sid].digest()


def channel_pair(
    sim: Simulator,
    ab: LinkConfig,
    ba: LinkConfig,
    app_a: App,
    app_b: App,
    *,
    sealed: bool = False,
    **channel_options: object,
) -> tuple[Channel, Channel, int, int]:
    """A client (a) and server (b) channel joined by two links; returns (a, b, index a, index b)."""
    channel_options.setdefault("rng", random.Random(sim.rng.getrandbits(64)).randbytes)
    a = Channel(True, **channel_options)  # type: ignore[arg-type]
    b = Channel(False, **channel_options)  # type: ignore[arg-type]
    ea: Endpoint = ChannelEndpoint(a, app_a)
    eb: Endpoint = ChannelEndpoint(b, app_b)
    if sealed:  # the packets now carry the session's overhead themselves: do not add it twice
        ea, eb = sealed_pair(ea, eb, sim.rng.getrandbits(32), sim.now)
        ab, ba = dataclasses.replace(ab, overhead=0), dataclasses.replace(ba, overhead=0)
    ia, ib = sim.connect(ea, eb, sim.link(ab), sim.link(ba))
    return a, b, ia, ib


_BLOCK = bytes(range(256)) * 256  # 64 KiB written again and again by an endless source


@dataclass
class FlowApp:
    """An endless bulk flow: the client side writes as fast as the channel accepts, the server
    side reads everything. Samples `(now, new stream bytes arrived)` for goodput: counting
    arrivals (the highest offset reached, never retransmissions) rather than reads keeps a
    measurement window from being credited with data that arrived before it and was only
    released by a repaired hole (a bias of a whole reorder buffer at 200 ms)."""

    send: bool = False
    total_received: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stream: int | None = None

    def on_wake(self, channel: Channel, now: float) -> None:
        if self.send and self._stream is None and channel.is_open:
            self._stream = channel.open_stream()
        while (event := channel.next_event()) is not None:
            if isinstance(event, StreamReadable):
                while data := channel.read(event.stream_id):
                    self.total_received += len(data)
        if not self.send:
            self.samples.append((now, channel.stats().stream_bytes_received))
        if self._stream is not None and channel.is_open:
            while channel.write(self._stream, _BLOCK) == len(_BLOCK):
                pass

    def received_between(self, start: float, end: float) -> int:
        """New stream bytes that arrived in the virtual-time window [start, end]."""
        at_start = at_end = 0
        for when, total in self.samples:
            if when <= start:
                at_start = total
            if when <= end:
                at_end = total
        return at_end - at_start


def goodput_fraction(
    loss: float,
    rtt: float,
    *,
    rate: float = 50e6,
    congestion: str = "bbr",
    warmup: float = 3.0,
    measure: float = 4.0,
    seed: int = 1,
    flows: int = 1,
) -> list[float]:
    """Each flow's goodput over [warmup, warmup+measure] as a fraction of the link rate, on a
    link with a queue of one bandwidth-delay product (at least 16 packets) and random loss each
    way. The rate counts datagram payload (channel packet + 32 bytes of session overhead)."""
    sim = Simulator(seed)
    bdp = int(rate * rtt / 8)
    config = LinkConfig(
        rate_bps=rate, delay=rtt / 2, loss=loss, queue_bytes=max(bdp, 16 * 1200)
    )
    forward, backward = sim.link(config), sim.link(config)
    sinks: list[FlowApp] = []
    for _ in range(flows):
        source, sink = FlowApp(send=True), FlowApp()
        rng = random.Random(sim.rng.getrandbits(64)).randbytes  # seeded: runs repeat exactly
        a = Channel(True, congestion=congestion, rng=rng)
        b = Channel(False, congestion=congestion, rng=rng)
        ia, ib = sim.add(ChannelEndpoint(a, source)), sim.add(ChannelEndpoint(b, sink))
        sim.route(ia, forward, ib)
        sim.route(ib, backward, ia)
        source.on_wake(a, 0.0)
        sinks.append(sink)
    sim.start()
    sim.run(warmup + measure + 0.01)
    capacity = rate / 8 * measure
    return [s.received_between(warmup, warmup + measure) / capacity for s in sinks]


@dataclass
class ExchangeResult:
    intact: bool  # every byte arrived, in order, with the sender's SHA-256, both ways
    closed_cleanly: bool  # both ends reached CLOSED after the client's close()
    finish_time: float  # virtual seconds until both transfers were read to EOF
    client: Channel
    server: Channel
    sim: Simulator


def exchange(
    ab: LinkConfig,
    ba: LinkConfig | None = None,
    *,
    size: int = 10 * 1024 * 1024,
    seed: int = 1,
    limit: float = 600.0,
    sealed: bool = False,
    every: tuple[float, Callable[[Simulator, float], None]] | None = None,
    **channel_options: object,
) -> ExchangeResult:
    """Send `size` random bytes each way on one stream, compare SHA-256, then close."""
    sim = Simulator(seed)
    payload_a = random.Random(seed).randbytes(size)
    payload_b = random.Random(seed + 1).randbytes(size)
    app_a, app_b = BulkApp(payload=payload_a), BulkApp(payload=payload_b)
    a, b, index_a, _ = channel_pair(
        sim, ab, ba or ab, app_a, app_b, sealed=sealed, **channel_options
    )
    app_a.start(a)
    app_b.start(b)
    sim.start()
    hook = None
    if every is not None:
        period, function = every
        hook = (period, lambda now: function(sim, now))
    end = sim.run(limit, stop=lambda: 1 in app_a.finished and 0 in app_b.finished, every=hook)
    intact = (
        0 in app_b.finished
        and 1 in app_a.finished
        and app_b.digest(0) == hashlib.sha256(payload_a).digest()
        and app_a.digest(1) == hashlib.sha256(payload_b).digest()
    )
    a.close("done")
    sim.wake(index_a)  # like a shell, send right after an application call
    sim.run(end + 60, stop=lambda: a.is_closed and b.is_closed)
    closed = (
        a.is_closed
        and b.is_closed
        and app_b.closed is not None
        and app_b.closed.reason == "done"
        and app_b.closed.by_peer
    )
    return ExchangeResult(intact, closed, end, a, b, sim)
