"""Per-packet CPU of the sans-IO core at 1,472-byte datagrams: channel + session, each side.

`python -m bench.bench_packet` moves stream data one way between two channels, each behind its
own session, in memory on virtual time with a 10 ms path and no loss. No sockets and no event
loop: this is the cost the compiled core (mypyc) changes, apart from the UDP and node glue.

- send: the sender's write, `packets_to_send`, `Session.seal` of every packet, and its handling
  of the receiver's acknowledgements (open, `receive_packet`);
- receive: the receiver's `Device.receive` (open, replay check), `receive_packet`, `read`, and
  the sealing of its acknowledgements.

Each figure is CPU microseconds per data packet of that side's work, best of `--repeat` runs:
the run's CPU time (`process_time`, so other processes on a busy machine count less than in wall
time) split between the sides as the cheap wall clock (`perf_counter`) divides it. Reading the
CPU clock around every step would cost about a fifth of what it measures (a system call).
`PTUNNEL_PURE=1 python -m bench.bench_packet` measures the pure-Python build; the first output
line says which build ran.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque
from dataclasses import dataclass

import tunnel
from tunnel.channel.channel import Channel
from tunnel.session import crypto
from tunnel.session.device import Device
from tunnel.session.session import Session
from tunnel.session.wire import TRANSPORT_OVERHEAD

DATAGRAM = 1472  # an Ethernet MTU of 1,500 less IPv4 and UDP headers
PSK = bytes(32)
A_ADDR = ("10.0.0.1", 40001)
B_ADDR = ("10.0.0.2", 40002)
ONE_WAY = 0.005  # seconds


@dataclass(slots=True)
class Cost:
    send_us: float
    receive_us: float
    packets: int


def _device(seed: int) -> Device:
    rng = random.Random(seed).randbytes
    return Device(crypto.generate_private_key(rng), PSK, allowed=None, rng=rng)


def _handshake(a: Device, b: Device) -> tuple[Session, Session]:
    """Two sessions with keys, by relaying the handshake datagrams in memory."""
    session = a.connect(b.public_key, [B_ADDR], 0.0, 0.0)
    devices = {A_ADDR: a, B_ADDR: b}
    for _ in range(10):
        moved = False
        for source, device in ((A_ADDR, a), (B_ADDR, b)):
            device.handle_timer(0.0, 0.0)  # works off queued handshake messages
            for data, addr in device.datagrams_to_send():
                devices[addr].receive_datagram(data, source, 0.0, 0.0)
                moved = True
        if not moved:
            break
    peer = b.get_session(a.public_key)
    if peer is None or not (session.is_established and peer.is_established):
        raise RuntimeError("the in-memory handshake did not complete")
    return session, peer


def measure(total_bytes: int) -> Cost:
    a_dev, b_dev = _device(1), _device(2)
    a_ses, b_ses = _handshake(a_dev, b_dev)
    rng = random.Random(3).randbytes
    size = DATAGRAM - TRANSPORT_OVERHEAD
    a = Channel(True, rng=rng, max_packet_size=size)
    b = Channel(False, rng=rng, max_packet_size=size)
    sid = a.open_stream()
    block = memoryview(bytes(65536))
    now, offset, received, packets = 0.0, 0, 0, 0
    send_s = receive_s = 0.0
    to_b: deque[tuple[float, bytes]] = deque()
    to_a: deque[tuple[float, bytes]] = deque()
    clock = time.perf_counter
    cpu_started = time.process_time()
    while received < total_bytes:
        started = clock()
        while to_a and to_a[0][0] <= now:
            opened = a_dev.receive(to_a.popleft()[1], B_ADDR, now, now)
            if opened is not None:
                a.receive_packet(opened[1], now)
        if offset < total_bytes:
            offset += a.write(sid, block[: min(len(block), total_bytes - offset)])
        deadline = a.get_timer()
        if deadline is not None and deadline <= now:
            a.handle_timer(now)
        out = a.packets_to_send(now)
        for packet in out:
            datagram = a_ses.seal(packet, now)
            if datagram is not None:
                to_b.append((now + ONE_WAY, datagram))
        packets += len(out)
        middle = clock()
        while to_b and to_b[0][0] <= now:
            opened = b_dev.receive(to_b.popleft()[1], A_ADDR, now, now)
            if opened is not None:
                b.receive_packet(opened[1], now)
        while chunk := b.read(sid):
            received += len(chunk)
        deadline = b.get_timer()
        if deadline is not None and deadline <= now:
            b.handle_timer(now)
        for packet in b.packets_to_send(now):
            datagram = b_ses.seal(packet, now)
            if datagram is not None:
                to_a.append((now + ONE_WAY, datagram))
        send_s += middle - started
        receive_s += clock() - middle
        pending = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
        pending += [q[0][0] for q in (to_a, to_b) if q]
        now = max(now, min(pending))
    cpu_us = (time.process_time() - cpu_started) * 1e6
    send_share = send_s / (send_s + receive_s)
    return Cost(cpu_us * send_share / packets, cpu_us * (1 - send_share) / packets, packets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="stream data moved per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = parser.parse_args(argv)
    costs = [measure(args.mib << 20) for _ in range(args.repeat)]
    send = min(c.send_us for c in costs)
    receive = min(c.receive_us for c in costs)
    print(f"build: {tunnel.BUILD}")
    print(f"{DATAGRAM}-byte datagrams, {costs[0].packets:,} data packets a run, best of "
          f"{args.repeat}: send {send:.1f} us, receive {receive:.1f} us per packet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
