"""Micro-benchmark of the session layer: handshakes per second, seal/open cost per packet.

Run: `python -m bench.bench_crypto [--payload 1440] [--seconds 1.0]`. Prints medians of 5 rounds.
Not a test: numbers depend on the machine and its load. 1,440 bytes of payload make a 1,472-byte
datagram, the largest an Ethernet path carries.

Measured:

- full handshake between two in-memory devices (initiation, response, confirming keepalive:
  4 DH on each side + key derivations), per second, single core;
- for each transport cipher the handshake can negotiate (ChaCha20-Poly1305, AES-256-GCM):
  `Session.seal` alone, `Device.receive_transport` alone (decrypt + replay window + timers),
  and the raw `encrypt` and `decrypt` floor of `cryptography`, in microseconds and MB/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tunnel.session import crypto
from tunnel.session.device import Device
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305, CIPHER_NAMES, TransportParams
from tunnel.session.session import Session, SessionConfig

A_ADDR = ("10.0.0.1", 40001)
B_ADDR = ("10.0.0.2", 51820)
ROUNDS = 5


def _pair(seed: int, cipher: int = CHACHA20_POLY1305) -> tuple[Device, Device]:
    config = SessionConfig(persistent_keepalive=None)
    params = TransportParams(ciphers=(cipher,))
    a = Device(bytes([seed]) * 32, bytes(32), config=config, params=params)
    b = Device(bytes([seed + 1]) * 32, bytes(32), config=config, params=params)
    return a, b


def _handshake(a: Device, b: Device, now: float) -> Session:
    session = a.connect(b.public_key, [B_ADDR], now, now)
    for data, _ in a.datagrams_to_send():
        b.receive_datagram(data, A_ADDR, now, now)
    b.handle_timer(now, now)
    for data, _ in b.datagrams_to_send():
        a.receive_datagram(data, B_ADDR, now, now)
    a.handle_timer(now, now)
    for data, _ in a.datagrams_to_send():
        b.receive_datagram(data, A_ADDR, now, now)
    assert session.is_established
    return session


def _rate(run: Callable[[int], None], seconds: float) -> float:
    """Operations per second; `run(n)` does n operations, n grows until a round is long enough."""
    n = 16
    while True:
        start = time.perf_counter()
        run(n)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4:
            break
        n *= 2
    rates = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run(n)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_handshakes(seconds: float) -> float:
    counter = [0]

    def run(n: int) -> None:
        for _ in range(n):
            counter[0] += 1
            a, b = _pair(counter[0] % 200)  # fresh devices: no rate or replay rules apply
            _handshake(a, b, 0.0)

    return _rate(run, seconds)


def bench_transport(payload_size: int, seconds: float, cipher: int) -> dict[str, float]:
    a, b = _pair(1, cipher)
    session = _handshake(a, b, 0.0)
    assert session.cipher == cipher
    payload = bytes(payload_size)
    now = 1.0

    def seal(n: int) -> None:
        for _ in range(n):
            session.seal(payload, now)

    aead = (AESGCM if cipher == AES_256_GCM else ChaCha20Poly1305)(bytes(32))
    nonce = crypto.nonce(0)
    sealed = aead.encrypt(nonce, payload, None)

    def raw_encrypt(n: int) -> None:
        for _ in range(n):
            aead.encrypt(nonce, payload, None)

    def raw_decrypt(n: int) -> None:
        for _ in range(n):
            aead.decrypt(nonce, sealed, None)

    return {
        "seal": _rate(seal, seconds),
        "open": _open_rate(session, b, payload),
        "raw encrypt": _rate(raw_encrypt, seconds),
        "raw decrypt": _rate(raw_decrypt, seconds),
    }


def _open_rate(session: Session, receiver: Device, payload: bytes, n: int = 20_000) -> float:
    """`Device.receive_transport` per second; sealing the datagrams is not timed, and each
    datagram is opened once (a replay would be a cheaper rejection)."""
    rates = []
    for _ in range(ROUNDS):
        batch = []
        for _ in range(n):
            data = session.seal(payload, 1.0)
            assert data is not None
            batch.append(data)
        receive = receiver.receive_transport
        start = time.perf_counter()
        for data in batch:
            if receive(data, A_ADDR, 1.0) is None:
                raise AssertionError("benchmark datagram was dropped")
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payload", type=int, default=1440, help="payload bytes (default 1440)")
    parser.add_argument("--seconds", type=float, default=1.0, help="rough time per measurement")
    args = parser.parse_args(argv)

    print(f"session layer micro-benchmark, medians of {ROUNDS} rounds, one core")
    hs = bench_handshakes(args.seconds)
    print(f"  handshakes (both sides, in memory): {hs:10,.0f} /s   ({1e3 / hs:.2f} ms each)")
    for cipher in (CHACHA20_POLY1305, AES_256_GCM):
        for name, rate in bench_transport(args.payload, args.seconds, cipher).items():
            mbps = rate * args.payload / 1e6
            print(
                f"  {CIPHER_NAMES[cipher]:<17} {name:<12} {args.payload} B: "
                f"{1e6 / rate:6.2f} us/packet  {rate:12,.0f} packets/s  {mbps:8.1f} MB/s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
