"""AES-256-GCM's packet limit on the batched data plane: no keypair seals or accepts a counter
at or past `Keypair.reject_counter` (2^23 for AES-256-GCM keys, RFC 9001 §6.6), whether one
payload goes out (`Session.seal`) or a GSO run (`Session.seal_batch`), and whether one datagram
comes in (`Device.receive_transport`) or a GRO buffer (`Device.receive_batch`).

A peer that ignores the limit is played by sealing with its keys' `Sealer` directly, which seals
any counter it is given: the datagrams are authentic, only their counters are past the limit.
"""

from __future__ import annotations

import pytest

from tests.support.session_harness import (
    PAIR_ADDRS,
    WALL_EPOCH,
    Net,
    handshake_pair,
    session_and_keys,
)
from tunnel.session.constants import AES_GCM_REJECT_AFTER_MESSAGES
from tunnel.session.device import Device
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305, TransportParams

A_ADDR, B_ADDR = PAIR_ADDRS
LIMIT = AES_GCM_REJECT_AFTER_MESSAGES
EACH_CIPHER = pytest.mark.parametrize("cipher", [CHACHA20_POLY1305, AES_256_GCM],
                                      ids=["chacha20-poly1305", "aes-256-gcm"])


def connected(cipher: int) -> tuple[Net, Device, Device]:
    """Two devices that offer only `cipher`, after their handshake."""
    params = TransportParams(ciphers=(cipher,))
    return handshake_pair(params, params)


@EACH_CIPHER
def test_a_gso_run_is_sealed_only_below_the_limit(cipher: int) -> None:
    """The responder (which never rekeys on volume) 2 packets before 2^23: a run of 2 goes
    out and is accepted; with AES-256-GCM keys a run of 1 more is staged and a handshake
    starts, with ChaCha20-Poly1305 keys it goes out too."""
    net, a, b = connected(cipher)
    session, keys = session_and_keys(b, a)
    keys.send_counter = LIMIT - 2
    run = session.seal_batch([b"one", b"two"], net.now)
    assert run is not None
    got = a.receive_batch(run, len(run) // 2, B_ADDR, net.now, WALL_EPOCH + net.now)
    assert [payload for _, payload in got] == [b"one", b"two"]
    late = session.seal_batch([b"three"], net.now)
    if cipher == AES_256_GCM:
        assert late is None and keys.send_counter == LIMIT
        assert session.pending is not None  # staged behind a new handshake
    else:
        assert late is not None and keys.send_counter == LIMIT + 1
        assert a.receive_transport(late, B_ADDR, net.now) is not None


@EACH_CIPHER
def test_a_peer_sealing_past_the_limit_is_not_accepted(cipher: int) -> None:
    """Authentic datagrams at and past 2^23 under AES-256-GCM keys are dropped as replays by
    both receive paths and leave the window alone, so the packet before the limit still
    arrives; under ChaCha20-Poly1305 keys the same counters are ordinary."""
    net, a, b = connected(cipher)
    _, keys = session_and_keys(a, b)
    past = [keys.send.seal(b"past", counter) for counter in (LIMIT, LIMIT + 1, 2**40)]
    last = keys.send.seal(b"last", LIMIT - 1)
    one = b.receive_transport(past[0], A_ADDR, net.now)
    batch = b.receive_batch(b"".join(past[1:]), len(past[1]), A_ADDR, net.now, 0.0)
    if cipher == AES_256_GCM:
        assert one is None and batch == [] and b.counters.replay == 3
        assert b.receive_transport(last, A_ADDR, net.now) is not None
    else:
        assert one is not None and one[1] == b"past"
        assert [payload for _, payload in batch] == [b"past", b"past"]
        assert b.counters.replay == 0
