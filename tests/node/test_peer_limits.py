"""What a `Peer` sends because a peer asked (issue 12, "No aiming"): port prediction is answered
once per introduction and per cooldown, its spray takes the node's probe budget, and a peer that
was never introduced is probed nowhere but where its authenticated packets came from."""

from __future__ import annotations

import random

from tunnel.addresses import Addr, relay_addr
from tunnel.node import payloads as nw
from tunnel.node.peer import REQUEST_WAIT, HandshakeWanted, Peer
from tunnel.path.manager import PathManager
from tunnel.path.prediction import COOLDOWN, DURATION
from tunnel.path.probebudget import ProbeBudget

A_KEY, B_KEY = bytes([1]) * 32, bytes([2]) * 32
A_PUBLIC: Addr = ("198.51.100.1", 40001)
PREDICTION = bytes((nw.PAYLOAD_PREDICTION,))


def prober_side(budget: ProbeBudget | None = None) -> Peer:
    """B's view of A: introduced, on the relay, ready to answer a prediction request."""
    b = Peer(static=A_KEY, path=PathManager(started=0.0, budget=budget or ProbeBudget()),
             is_client=False, rng=random.Random(6).randbytes)
    b.on_introduced(A_PUBLIC, [], None, 0.0)
    b.on_handshake_completed(relay_addr(A_KEY), 0.0)
    return b


def sprayed(peer: Peer, start: float, seconds: float) -> int:
    """Pings to random ports of A's address over `seconds`."""
    count, now = 0, start
    while now < start + seconds:
        peer.poll(now, established=True)
        count += sum(1 for _, addr in peer.datagrams_to_send(now, True)
                     if addr[0] == A_PUBLIC[0] and addr != A_PUBLIC)
        now += 0.05
    return count


def test_a_prediction_request_is_answered_once_per_introduction() -> None:
    b = prober_side()
    b.receive(PREDICTION, relay_addr(A_KEY), 0.0)
    first = sprayed(b, 0.0, DURATION + 1)
    assert first > 1000 and b.prober is None
    # Asked again at once, and again after the cooldown, without a new introduction: ignored.
    for at in (DURATION + 2, COOLDOWN + 10):
        b.receive(PREDICTION, relay_addr(A_KEY), at)
        assert b.prober is None and sprayed(b, at, 5.0) == 0
    # A new introduction (the peer paid for it with a request to the rendezvous), after the
    # cooldown: one more attempt.
    b.on_introduced(A_PUBLIC, [], None, COOLDOWN + 20)
    b.receive(PREDICTION, relay_addr(A_KEY), COOLDOWN + 20)
    assert b.prober is not None


def test_introductions_do_not_beat_the_cooldown() -> None:
    b = prober_side()
    b.receive(PREDICTION, relay_addr(A_KEY), 0.0)
    sprayed(b, 0.0, DURATION + 1)
    b.on_introduced(A_PUBLIC, [], None, DURATION + 2)
    b.receive(PREDICTION, relay_addr(A_KEY), DURATION + 2)
    assert b.prober is None


def test_a_request_that_beats_its_introduction_is_answered_when_it_comes() -> None:
    b = Peer(static=A_KEY, path=PathManager(started=0.0), is_client=False,
             rng=random.Random(8).randbytes)
    b.on_handshake_completed(relay_addr(A_KEY), 0.0)
    b.receive(PREDICTION, relay_addr(A_KEY), 0.0)  # before the rendezvous' introduction
    assert sprayed(b, 0.0, 1.0) == 0 and b.prober is None  # never introduced: no spray
    b.on_introduced(A_PUBLIC, [], None, 1.0)
    assert sprayed(b, 1.0, 1.0) > 0


def test_a_request_never_introduced_expires_unanswered() -> None:
    b = Peer(static=A_KEY, path=PathManager(started=0.0), is_client=False,
             rng=random.Random(9).randbytes)
    b.on_handshake_completed(relay_addr(A_KEY), 0.0)
    b.receive(PREDICTION, relay_addr(A_KEY), 0.0)
    sprayed(b, 0.0, REQUEST_WAIT + 1)
    b.on_introduced(A_PUBLIC, [], None, REQUEST_WAIT + 1)  # too late for that request
    assert sprayed(b, REQUEST_WAIT + 1, 5.0) == 0


def test_the_spray_takes_the_nodes_probe_budget() -> None:
    budget = ProbeBudget(rate=10.0, burst=10.0, tokens=10.0)
    b = prober_side(budget)
    b.receive(PREDICTION, relay_addr(A_KEY), 0.0)
    sent = sprayed(b, 0.0, 10.0)
    assert sent <= 10 + 10 * 10 + 1 and budget.refused > 0  # 50 a second wanted, 10 allowed


def test_a_peer_never_introduced_is_probed_only_where_it_answered_from() -> None:
    """A member that handshakes with us directly gets no punching toward any other address,
    and the session may send initiations only back to where it came from (or the relay)."""
    source: Addr = ("198.51.100.9", 5000)
    b = Peer(static=A_KEY, path=PathManager(started=0.0), is_client=False,
             rng=random.Random(7).randbytes)
    b.on_handshake_completed(source, 0.0)
    wanted: list[Addr] = []
    now = 0.0
    while now < 60.0:
        b.poll(now, established=False)
        wanted += [a for e in iter(b.next_event, None) if isinstance(e, HandshakeWanted)
                   for a in e.addrs]
        now += 0.1
    assert set(wanted) <= {source, relay_addr(A_KEY)}
    assert b.may_send_initiation(source, now) and b.may_send_initiation(relay_addr(A_KEY), now)
    assert not b.may_send_initiation(("10.0.0.9", 5000), now)
    assert not b.may_send_initiation(relay_addr(B_KEY), now)  # another peer's relay
