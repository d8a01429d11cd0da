"""Micro-benchmark of the data plane at 1,472-byte datagrams: CPU per packet to send and receive.

Run: `python -m bench.bench_datapath [--seconds 1.0] [--cipher NAME]`; `PTUNNEL_PURE=1` measures
the Python twins instead of the C extensions. Prints medians of 5 rounds; not a test. The session
and socket rows run once per transport cipher a handshake can negotiate (ChaCha20-Poly1305,
AES-256-GCM), or only for `--cipher`.

Each row is one way of doing the same work, so old and new compare in one run:

- seal: `Session.seal` one payload at a time and `b"".join` for GSO (before issue 13), against
  `Session.seal_batch` of a GSO run of 44 (what `Node` does now);
- open: `Device.receive_transport` per datagram after splitting a GRO buffer (before), against
  `Device.receive_batch` of the whole buffer (now);
- socket, send + receive: the above with real loopback sockets, GSO out and GRO in, the receive
  side either `recvmsg` until BlockingIOError (before) or `udpio.recv_batch` (now);
- end of a drain: what telling an empty socket from a busy one costs (BlockingIOError,
  FIONREAD, or a short recvmmsg batch).

The channel above the session is not in these figures (`bench_channel.py --cpu` measures it).
"""

from __future__ import annotations

import argparse
import fcntl
import socket
import statistics
import struct
import termios
import time
from collections.abc import Callable

from bench.bench_crypto import A_ADDR, _handshake, _pair
from tunnel.node import udpio
from tunnel.node.udp import SOL_UDP, UDP_GRO, UDP_SEGMENT
from tunnel.session import datapath
from tunnel.session.device import Device
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305, CIPHER_NAMES
from tunnel.session.session import Session

DATAGRAM = 1472  # bytes: the largest UDP payload of a 1,500-byte Ethernet MTU
PAYLOAD = DATAGRAM - 32
RUN = 44  # datagrams per GSO send: 65,000 // 1,472
ROUNDS = 5


def _per_packet(run: Callable[[], int], seconds: float) -> float:
    """Microseconds of CPU per packet: `run()` does some packets and returns how many."""
    medians = []
    for _ in range(ROUNDS):
        packets, started = 0, time.process_time()
        deadline = time.perf_counter() + seconds / ROUNDS
        while time.perf_counter() < deadline:
            packets += run()
        medians.append((time.process_time() - started) / packets * 1e6)
    return statistics.median(medians)


def _established(cipher: int) -> tuple[Session, Device]:
    a, b = _pair(1, cipher)
    session = _handshake(a, b, 0.0)
    assert session.cipher == cipher
    return session, b


def bench_session(seconds: float, cipher: int) -> dict[str, float]:
    session, receiver = _established(cipher)
    payloads = [bytes(PAYLOAD)] * RUN

    def seal_one_by_one() -> int:
        sealed = [session.seal(p, 1.0) for p in payloads]
        b"".join(d for d in sealed if d is not None)
        return RUN

    def seal_batch() -> int:
        session.seal_batch(payloads, 1.0)
        return RUN

    def gro_buffer() -> bytes:
        data = session.seal_batch(payloads, 1.0)
        assert data is not None
        return data

    def open_one_by_one() -> int:
        data = gro_buffer()
        view = memoryview(data)
        receive = receiver.receive_transport
        for offset in range(0, len(data), DATAGRAM):
            if receive(bytes(view[offset:offset + DATAGRAM]), A_ADDR, 1.0) is None:
                raise AssertionError("dropped")
        return RUN

    def open_batch() -> int:
        if len(receiver.receive_batch(gro_buffer(), DATAGRAM, A_ADDR, 1.0, 1.0)) != RUN:
            raise AssertionError("dropped")
        return RUN

    seal_cost = _per_packet(seal_batch, seconds)  # subtracted: the open rows seal their input
    return {
        "seal, one by one + join": _per_packet(seal_one_by_one, seconds),
        "seal_batch of 44": seal_cost,
        "open, split + one by one": _per_packet(open_one_by_one, seconds) - seal_cost,
        "receive_batch of 44": _per_packet(open_batch, seconds) - seal_cost,
    }


def _socket_pair() -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    receiver.setsockopt(SOL_UDP, UDP_GRO, 1)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    return sender, receiver, receiver.getsockname()


def bench_sockets(seconds: float, cipher: int) -> dict[str, float]:
    session, device = _established(cipher)
    sender, receiver, addr = _socket_pair()
    payloads = [bytes(PAYLOAD)] * RUN
    gso = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", DATAGRAM))]
    src = sender.getsockname()

    def send_old() -> None:
        sealed = [session.seal(p, 1.0) for p in payloads]
        sender.sendmsg([b"".join(d for d in sealed if d is not None)], gso, 0, addr)

    def send_new() -> None:
        data = session.seal_batch(payloads, 1.0)
        assert data is not None
        sender.sendmsg([data], gso, 0, addr)

    def receive_old() -> int:
        got = 0
        while True:
            try:
                data, ancillary, _, _ = receiver.recvmsg(65535, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return got
            segment = next((int.from_bytes(v[:4], "little") for lvl, kind, v in ancillary
                            if lvl == SOL_UDP and kind == UDP_GRO), len(data))
            view = memoryview(data)
            for offset in range(0, len(data), segment):
                if device.receive_transport(bytes(view[offset:offset + segment]), src,
                                            1.0) is not None:
                    got += 1

    def receive_new() -> int:
        got = 0
        while True:
            batch = udpio.recv_batch(receiver, udpio.MAX_BATCH)
            for data, source, segment in batch:
                got += len(device.receive_batch(data, segment, source, 1.0, 1.0))
            if len(batch) < udpio.MAX_BATCH:
                return got

    results = {}
    for name, send, receive in (("before", send_old, receive_old),
                                ("now", send_new, receive_new)):
        send_cpu: list[float] = []
        receive_cpu: list[float] = []
        for _ in range(ROUNDS):
            packets, send_time, receive_time = 0, 0.0, 0.0
            deadline = time.perf_counter() + seconds / ROUNDS
            while time.perf_counter() < deadline:
                started = time.process_time()
                send()
                middle = time.process_time()
                packets += receive()
                receive_time += time.process_time() - middle
                send_time += middle - started
            send_cpu.append(send_time / packets * 1e6)
            receive_cpu.append(receive_time / packets * 1e6)
        results[f"{name}: send (seal + GSO sendmsg)"] = statistics.median(send_cpu)
        results[f"{name}: receive (read + GRO split + open)"] = statistics.median(receive_cpu)
    sender.close()
    receiver.close()
    return results


def bench_drain_end(seconds: float) -> dict[str, float]:
    """Cost of finding the socket empty, per drain."""
    _sender, receiver, _addr = _socket_pair()
    buffer = bytearray(4)

    def exception() -> int:
        try:
            receiver.recvmsg(65535, socket.CMSG_SPACE(4))
        except BlockingIOError:
            pass
        return 1

    def fionread() -> int:
        fcntl.ioctl(receiver.fileno(), termios.FIONREAD, buffer)
        return 1

    def short_batch() -> int:
        udpio.recv_batch(receiver, udpio.MAX_BATCH)
        return 1

    results = {
        "recvmsg raising BlockingIOError": _per_packet(exception, seconds),
        "ioctl FIONREAD (one per datagram)": _per_packet(fionread, seconds),
        f"recv_batch returning [] ({udpio.IMPLEMENTATION})": _per_packet(short_batch, seconds),
    }
    receiver.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="rough time per row")
    names = {name: cipher for cipher, name in CIPHER_NAMES.items()}
    parser.add_argument("--cipher", choices=sorted(names), help="only this transport cipher")
    args = parser.parse_args(argv)
    ciphers = [names[args.cipher]] if args.cipher else [CHACHA20_POLY1305, AES_256_GCM]
    print(f"data plane at {DATAGRAM}-byte datagrams, CPU us per packet, medians of {ROUNDS} "
          f"rounds; datapath: {datapath.IMPLEMENTATION}, udpio: {udpio.IMPLEMENTATION}")
    sections: list[tuple[str, dict[str, float]]] = []
    for cipher in ciphers:
        name = CIPHER_NAMES[cipher]
        sections.append((f"session layer, {name}", bench_session(args.seconds, cipher)))
        sections.append((f"loopback sockets, {name}", bench_sockets(args.seconds, cipher)))
    sections.append(("end of a drain, us per drain", bench_drain_end(args.seconds)))
    for title, rows in sections:
        print(f"  {title}")
        for name, cost in rows.items():
            print(f"    {name:<42} {cost:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
