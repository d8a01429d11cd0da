"""Sessions over time: rekey without loss, reordering, and WireGuard's timers, on virtual time."""

from __future__ import annotations

import itertools
import random

import pytest

from tests.support.session_harness import (
    INITIATOR_PARAMS,
    RESPONDER_PARAMS,
    Net,
    Sent,
    drain_events,
    make_device,
)
from tunnel.session.constants import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    SESSION_IDLE_LIMIT,
    ZERO_KEYS_AFTER,
)
from tunnel.session.device import Device
from tunnel.session.events import (
    HandshakeCompleted,
    HandshakeFailed,
    PayloadReceived,
    SessionEvent,
    SessionRemoved,
)
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305, TransportParams
from tunnel.session.replay import WINDOW_SIZE
from tunnel.session.session import Session, SessionConfig
from tunnel.session.wire import MESSAGE_INITIATION, MESSAGE_TRANSPORT, TRANSPORT_OVERHEAD

A_ADDR = ("10.0.0.1", 40001)
B_ADDR = ("10.0.0.2", 51820)
QUIET = SessionConfig(persistent_keepalive=None)
# The replay tests run under each transport cipher a handshake may negotiate.
EACH_CIPHER = pytest.mark.parametrize("cipher", [CHACHA20_POLY1305, AES_256_GCM],
                                      ids=["chacha20-poly1305", "aes-256-gcm"])


def connected(
    config: SessionConfig | None = None, cipher: int | None = None
) -> tuple[Net, Device, Device, Session, Session]:
    """Two devices with established keys; `cipher`: the only one both offer (default: both
    offer both, so AES-256-GCM is chosen)."""
    params = None if cipher is None else TransportParams(ciphers=(cipher,))
    net = Net()
    a = net.add(A_ADDR, make_device(1, config=config, params=params))
    b = net.add(B_ADDR, make_device(2, config=config, params=params))
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.settle()
    a_session, b_session = a.get_session(b.public_key), b.get_session(a.public_key)
    assert a_session is not None and b_session is not None
    assert a_session.is_established and b_session.is_established
    assert cipher is None or a_session.cipher == b_session.cipher == cipher
    drain_events(a), drain_events(b)
    return net, a, b, a_session, b_session


def payloads(events: list[SessionEvent]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, PayloadReceived)]


def transports_from(net: Net, src: tuple[str, int]) -> list[Sent]:
    return [s for s in net.captured if s.src == src and s.data[0] == MESSAGE_TRANSPORT]


def test_rekey_in_a_stream_of_100k_messages_loses_and_duplicates_nothing() -> None:
    net, a, b, a_session, b_session = connected()
    shuffle = random.Random(5).shuffle
    total, batch = 100_000, 64
    received_by_b: list[int] = []
    received_by_a: list[int] = []
    for i in range(total):
        a_session.send(i.to_bytes(4, "big"), net.now)
        if i % 10 == 0:
            b_session.send(i.to_bytes(4, "big"), net.now)
        if i % batch == batch - 1 or i == total - 1:
            net.now += 0.002 * batch  # 100k messages span 200 s: past the 120 s rekey
            net.run_timers()
            net.collect()
            in_flight, net.in_flight = net.in_flight, []
            shuffle(in_flight)  # reordering inside a batch, handshake messages included
            for sent in in_flight:
                net.deliver(sent)
            net.settle()
            received_by_b += [int.from_bytes(p, "big") for p in payloads(drain_events(b))]
            received_by_a += [int.from_bytes(p, "big") for p in payloads(drain_events(a))]
    assert received_by_b == sorted(received_by_b) or len(received_by_b) == total
    assert sorted(received_by_b) == list(range(total))
    assert sorted(received_by_a) == list(range(0, total, 10))
    assert a.counters.handshakes_completed >= 2 and b.counters.handshakes_completed >= 2
    for device in (a, b):
        assert device.counters.replay == device.counters.bad_tag == device.counters.stale == 0
        assert device.counters.unknown_index == 0


def test_rekey_after_message_limit() -> None:
    net, a, _b, a_session, _ = connected(SessionConfig(rekey_after_messages=1_000))
    for _ in range(5_000):
        a_session.send(b"x", net.now)
        net.now += 0.01  # 50 s: the 5 s spacing between initiations allows several rekeys
        net.settle()
    assert a.counters.handshakes_completed >= 4


@EACH_CIPHER
def test_reordering_inside_the_window_is_accepted_duplicates_are_not(cipher: int) -> None:
    net, _a, b, a_session, _ = connected(QUIET, cipher)
    datagrams = [a_session.seal(i.to_bytes(4, "big"), net.now) for i in range(WINDOW_SIZE)]
    order = list(range(WINDOW_SIZE))
    random.Random(11).shuffle(order)
    for i in order:
        data = datagrams[i]
        assert data is not None
        assert b.receive_transport(data, A_ADDR, net.now) is not None
    for data in datagrams:
        assert data is not None
        assert b.receive_transport(data, A_ADDR, net.now) is None
    assert b.counters.replay == WINDOW_SIZE


@EACH_CIPHER
def test_packets_older_than_the_window_are_rejected(cipher: int) -> None:
    _net, _a, b, a_session, _ = connected(QUIET, cipher)
    first = a_session.seal(b"old", 0.0)
    for _ in range(WINDOW_SIZE + 1):
        later = a_session.seal(b"new", 0.0)
        assert later is not None
        assert b.receive_transport(later, A_ADDR, 0.0) is not None
    assert first is not None
    assert b.receive_transport(first, A_ADDR, 0.0) is None and b.counters.replay == 1


def test_payloads_sent_before_the_handshake_are_staged_then_delivered() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    session = a.connect(b.public_key, [B_ADDR], net.now, net.now)
    assert session.seal(b"early", net.now) is None
    session.send(b"early 2", net.now)
    net.settle()
    assert payloads(drain_events(b)) == [b"early", b"early 2"]


def test_simultaneous_initiations_converge() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    a_session = a.connect(b.public_key, [B_ADDR], net.now, net.now)
    b_session = b.connect(a.public_key, [A_ADDR], net.now, net.now)
    net.settle()
    a_session.send(b"to b", net.now)
    b_session.send(b"to a", net.now)
    net.settle()
    assert payloads(drain_events(b)) == [b"to b"]
    assert payloads(drain_events(a)) == [b"to a"]


def test_handshake_retried_every_5s_with_jitter_and_abandoned_after_90s() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = make_device(2)  # not on the network: nothing ever answers
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.advance(200.0)
    times = [s.at for s in net.captured if s.data[0] == MESSAGE_INITIATION]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT <= g <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX for g in gaps)
    assert len(set(gaps)) > 1  # jittered
    # The last retry is the last one that starts within 90 s; then the attempt is abandoned.
    assert times[-1] > REKEY_ATTEMPT_TIME - REKEY_TIMEOUT - REKEY_TIMEOUT_JITTER_MAX
    assert times[-1] <= REKEY_ATTEMPT_TIME
    (failed,) = [e for e in drain_events(a) if isinstance(e, HandshakeFailed)]
    assert failed.peer_public == b.public_key
    assert a.counters.handshakes_failed == 1 and not a.indices.handshakes


def test_keepalive_answers_data_after_10s_of_silence() -> None:
    net, _a, _b, a_session, _ = connected(QUIET)
    a_session.send(b"hello", net.now)
    start = net.now
    net.advance(30.0)
    from_b = transports_from(net, B_ADDR)
    keepalives = [s for s in from_b if s.at > start]
    assert len(keepalives) == 1 and len(keepalives[0].data) == TRANSPORT_OVERHEAD
    assert keepalives[0].at == start + KEEPALIVE_TIMEOUT


def test_no_keepalive_when_we_answered() -> None:
    net, _a, _b, a_session, b_session = connected(QUIET)
    a_session.send(b"hello", net.now)
    start = net.now
    net.advance(1.0)
    b_session.send(b"answer", net.now)
    net.advance(30.0)
    assert len([s for s in transports_from(net, B_ADDR) if s.at > start]) == 1


def test_persistent_keepalive_on_by_default_every_25s() -> None:
    net, _a, _b, _, _ = connected()
    start = net.now
    net.advance(100.0)
    times = [s.at - start for s in transports_from(net, A_ADDR) if s.at > start]
    assert times[:3] == [25.0, 50.0, 75.0]


def test_persistent_keepalive_configurable_and_off() -> None:
    net, _a, _b, _, _ = connected(SessionConfig(persistent_keepalive=7.0))
    net.advance(30.0)
    assert [s.at for s in transports_from(net, A_ADDR)][1:5] == [7.0, 14.0, 21.0, 28.0]
    net, _a, _b, _, _ = connected(QUIET)
    count = len(net.captured)
    net.advance(170.0)
    assert len(net.captured) == count


def test_keys_rejected_after_180s_then_fresh_handshake() -> None:
    net, a, b, a_session, _ = connected(QUIET)
    old = a_session.seal(b"sealed at 0", net.now)
    net.filter = lambda sent: False  # a partition: a's attempts to rehandshake all fail
    net.advance(REJECT_AFTER_TIME + 1)
    net.filter = None
    assert old is not None
    # Idle as long as its keys live, each side's session is gone, its indices with it.
    assert b.receive_transport(old, A_ADDR, net.now) is None and b.counters.unknown_index == 1
    assert a.get_session(b.public_key) is None and b.get_session(a.public_key) is None
    assert a_session.seal(b"from the removed session", net.now) is None  # inert: no handshake
    assert not a.indices.handshakes and not a.datagrams_to_send()
    session = a.connect(b.public_key, [B_ADDR], net.now, net.now)
    assert session.seal(b"after expiry", net.now) is None  # staged; handshake started
    net.settle()
    assert payloads(drain_events(b)) == [b"after expiry"]
    assert a.counters.handshakes_completed == 2


def test_rekey_after_120s_of_sending() -> None:
    net, a, _b, a_session, _ = connected(QUIET)
    for _ in range(13):
        net.advance(10.0)
        a_session.send(b"tick", net.now)
        net.settle()
    assert a.counters.handshakes_completed == 2


def test_peer_silent_after_our_data_triggers_new_handshake() -> None:
    net, _a, _b, a_session, _ = connected(QUIET)
    net.filter = lambda sent: sent.src != B_ADDR  # b's packets are lost from now on
    a_session.send(b"anyone there?", net.now)
    start = net.now
    net.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 1)
    initiations = [s.at for s in net.captured if s.data[0] == MESSAGE_INITIATION and s.at > start]
    assert initiations and initiations[0] == start + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT


def test_silent_sessions_removed_with_their_keys_after_idle_limit() -> None:
    net, a, b, a_session, _ = connected(QUIET)
    net.advance(SESSION_IDLE_LIMIT - 1)
    assert a.get_session(b.public_key) is a_session and b.get_session(a.public_key) is not None
    net.advance(2)
    assert SessionRemoved(b.public_key) in drain_events(a)
    assert SessionRemoved(a.public_key) in drain_events(b)
    assert not a_session.is_established and not a.indices.keypairs and not b.indices.keypairs
    assert a.get_session(b.public_key) is None and b.get_session(a.public_key) is None
    assert SESSION_IDLE_LIMIT < ZERO_KEYS_AFTER  # removal comes before WireGuard's key wipe


def test_handshake_completed_events_name_peer_and_address() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.settle()
    assert drain_events(a) == [HandshakeCompleted(b.public_key, B_ADDR, True, RESPONDER_PARAMS)]
    assert drain_events(b) == [HandshakeCompleted(a.public_key, A_ADDR, False, INITIATOR_PARAMS)]


def test_lossy_duplicating_network_still_handshakes_and_never_duplicates() -> None:
    net = Net()
    a = net.add(A_ADDR, make_device(1, config=QUIET))
    b = net.add(B_ADDR, make_device(2, config=QUIET))
    chance = random.Random(21).random

    def lossy(sent: Sent) -> bool:
        if chance() < 0.3:
            return False  # lost
        if chance() < 0.3:
            net.deliver(sent)  # duplicated: one copy now, one more when returning True
        return True

    net.filter = lossy
    session = a.connect(b.public_key, [B_ADDR], net.now, net.now)
    net.advance(60.0)
    assert session.is_established
    received: list[bytes] = []
    for i in range(2_000):
        session.send(i.to_bytes(2, "big"), net.now)
        net.settle()
        received += payloads(drain_events(b))
    assert len(received) == len(set(received))  # every duplicate was rejected
    assert 0.6 * 2_000 < len(received) < 0.8 * 2_000  # ~30% lost, the rest arrived once
    assert b.counters.replay > 0
