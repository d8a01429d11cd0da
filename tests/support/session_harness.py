"""Test helpers for the session layer: seeded randomness and an in-memory network on virtual time.

Not a test module itself. `Net` moves datagrams between `Device`s by address, runs their timers
when virtual time reaches them, and keeps a copy of everything sent so tests can replay or
tamper with captured messages.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.addresses import Addr
from tunnel.session import crypto
from tunnel.session.device import Device
from tunnel.session.events import SessionEvent
from tunnel.session.params import AES_256_GCM, TransportParams, encode_params
from tunnel.session.session import Keypair, Session, SessionConfig
from tunnel.session.wire import INITIATION_BASE_SIZE, MAC_SIZE, RESPONSE_BASE_SIZE

WALL_EPOCH = 1_700_000_000.0  # wall clock at virtual time 0
NETWORK_SECRET_PSK = bytes(range(32))  # stands in for netkeys.handshake_psk(secret)
# Sizes of the handshake messages of two devices with default transport parameters.
INITIATION_SIZE = INITIATION_BASE_SIZE + len(encode_params(TransportParams()))
RESPONSE_SIZE = RESPONSE_BASE_SIZE + len(encode_params(TransportParams(), chosen=AES_256_GCM))
INITIATION_MAC1_OFFSET = INITIATION_SIZE - 2 * MAC_SIZE
# What each side of a default handshake learns of the other: the offer, and the choice.
INITIATOR_PARAMS = TransportParams()
RESPONDER_PARAMS = TransportParams(ciphers=(AES_256_GCM,))


class SeededRng:
    """A deterministic `rng(n) -> bytes`."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._random.randbytes(n)


def make_device(
    seed: int,
    psk: bytes = NETWORK_SECRET_PSK,
    allowed: list[bytes] | None = None,
    config: SessionConfig | None = None,
    params: TransportParams | None = None,
) -> Device:
    rng = SeededRng(seed)
    return Device(crypto.generate_private_key(rng), psk, allowed=allowed, rng=rng, config=config,
                  params=params)


@dataclass
class Sent:
    data: bytes
    src: Addr
    dst: Addr
    at: float = 0.0  # virtual time it was sent


@dataclass
class Net:
    """Devices by address; datagrams delivered in order unless a test intervenes."""

    now: float = 0.0
    devices: dict[Addr, Device] = field(default_factory=dict)
    in_flight: list[Sent] = field(default_factory=list)
    captured: list[Sent] = field(default_factory=list)
    # Called on every datagram before delivery; return False to drop it.
    filter: Callable[[Sent], bool] | None = None

    def add(self, addr: Addr, device: Device) -> Device:
        self.devices[addr] = device
        return device

    def addr_of(self, device: Device) -> Addr:
        return next(a for a, d in self.devices.items() if d is device)

    def collect(self) -> None:
        for src, device in self.devices.items():
            for data, dst in device.datagrams_to_send():
                sent = Sent(data, src, dst, self.now)
                self.captured.append(sent)
                self.in_flight.append(sent)

    def run_timers(self) -> None:
        for device in self.devices.values():
            deadline = device.get_timer()
            if deadline is not None and deadline <= self.now:
                device.handle_timer(self.now, WALL_EPOCH + self.now)

    def deliver(self, sent: Sent, src: Addr | None = None) -> None:
        device = self.devices.get(sent.dst)
        if device is not None:
            device.receive_datagram(sent.data, src or sent.src, self.now, WALL_EPOCH + self.now)

    def settle(self, max_rounds: int = 1000) -> None:
        """Deliver until nothing is in flight and no timer is due now."""
        for _ in range(max_rounds):
            self.run_timers()
            self.collect()
            if not self.in_flight:
                return
            batch, self.in_flight = self.in_flight, []
            for sent in batch:
                if self.filter is None or self.filter(sent):
                    self.deliver(sent)
        raise AssertionError("network did not settle")

    def advance(self, seconds: float, max_steps: int = 1_000_000) -> None:
        """Move virtual time forward from timer deadline to timer deadline, settling at each."""
        end = self.now + seconds
        self.settle()
        for _ in range(max_steps):
            deadlines = [
                d for d in (dev.get_timer() for dev in self.devices.values()) if d is not None
            ]
            self.now = max(self.now, min([*deadlines, end]))
            self.settle()
            if self.now >= end:
                return
        raise AssertionError("timers did not make progress")


def drain_events(device: Device) -> list[SessionEvent]:
    events = []
    while (event := device.next_event()) is not None:
        events.append(event)
    return events


PAIR_ADDRS: tuple[Addr, Addr] = (("10.0.0.1", 40001), ("10.0.0.2", 51820))


def handshake_pair(a_params: TransportParams,
                   b_params: TransportParams) -> tuple[Net, Device, Device]:
    """Devices 1 and 2 (at PAIR_ADDRS) with these transport parameters, after 1 connected to 2
    and the handshake settled."""
    net = Net()
    a = net.add(PAIR_ADDRS[0], make_device(1, params=a_params))
    b = net.add(PAIR_ADDRS[1], make_device(2, params=b_params))
    a.connect(b.public_key, [PAIR_ADDRS[1]], net.now, WALL_EPOCH + net.now)
    net.settle()
    return net, a, b


def session_and_keys(device: Device, peer: Device) -> tuple[Session, Keypair]:
    """The session of `device` with `peer` and its current keypair (both must exist)."""
    session = device.get_session(peer.public_key)
    assert session is not None and session._current is not None
    return session, session._current
