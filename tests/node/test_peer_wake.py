"""A side that stops running for a while and wakes: a laptop that slept, a process that was
stopped (SIGSTOP) or a paused VM. The other side ran on, gave the channel up and lost the peer;
the sleeper wakes to a clock that jumped and to what the other side sent meanwhile. A local
connection made at once (the user opens the lid and types `ssh`) must get through on a new
channel, not be reset by the two sides replacing their dead channels at the same time.

Sans-IO, on virtual time, as `tests/node/test_peer.py`; the shell's part is the order it works
in after a wake: the sleeper's overdue timers first (`Node._catch_up`), then its socket's
backlog, and a local connection attached at either moment.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.node.test_peer import A_ADDR, B_ADDR, Pair, datagrams, make_peer
from tunnel.channel.events import ChannelClosed, StreamReset
from tunnel.node.peer import IntroductionWanted, Peer

LOW, HIGH = bytes([1]) * 32, bytes([2]) * 32


def laptop_and_home(laptop_is_client: bool, first_bytes: bool = True) -> Pair:
    """`a` is the laptop (it asked for `home` by name), `b` home; which of them is the channel's
    client follows from their keys, as in the node. `first_bytes`: a byte each way first."""
    laptop_key, home_key = (LOW, HIGH) if laptop_is_client else (HIGH, LOW)
    pair = Pair(make_peer(home_key, laptop_key, 1), make_peer(laptop_key, home_key, 2))
    pair.a.on_introduced(B_ADDR, [], "home", 0.0)
    pair.b.on_introduced(A_ADDR, [], None, 0.0)
    pair.a.on_handshake_completed(B_ADDR, 0.0)
    pair.b.on_handshake_completed(A_ADDR, 0.0)
    assert pair.a.is_client == laptop_is_client
    for peer in (pair.a, pair.b):
        assert peer.channel is not None
        if first_bytes:
            peer.channel.write(peer.channel.open_stream(), b"!")
    pair.run(5.0)
    return pair


def run_alone(peer: Peer, now: float) -> list[bytes]:
    """One step of the side that runs on: what it sends."""
    if (deadline := peer.get_timer()) is not None and deadline <= now:
        peer.handle_timer(now)
    peer.poll(now, established=True)
    while (event := peer.next_event()) is not None:
        if isinstance(event, IntroductionWanted):
            peer.on_introduced(A_ADDR, [], None, now)
    while peer.next_channel_event() is not None:
        pass
    return [payload for payload, _ in datagrams(peer, now, True)]


def up(peer: Peer) -> bool:
    """What `Connection._up` asks before it gives a local connection a stream."""
    return peer.ready and peer.reconnecting_since is None and peer.channel is not None \
        and peer.channel.is_open


@pytest.mark.parametrize("laptop_is_client", [True, False], ids=["laptop-client", "home-client"])
@pytest.mark.parametrize("asleep", [45.0, 150.0])
@pytest.mark.parametrize("connect_first", [False, True], ids=["backlog-first", "connect-first"])
@pytest.mark.parametrize("split", [False, True], ids=["together", "one-by-one"])
def test_a_connection_made_on_waking_gets_through(laptop_is_client: bool, asleep: float,
                                                 connect_first: bool, split: bool) -> None:
    pair = laptop_and_home(laptop_is_client)
    laptop, home = pair.a, pair.b
    backlog: list[bytes] = []  # what home sends while the laptop sleeps waits in its socket
    for _ in range(round(asleep / 0.5)):
        pair.now += 0.5
        backlog += run_alone(home, pair.now)
    assert home.channel is not None and home.channel.is_closed  # home gave the channel up
    assert home.state(pair.now).startswith(("reconnecting", "unreachable"))

    # The laptop wakes: its overdue timers first and the flush after them, as the node runs
    # them before any input (`Node.catch_up`): the dead channel is replaced before the backlog,
    # which holds home's packets for it, is read.
    deadline = laptop.get_timer()
    assert deadline is not None and deadline <= pair.now
    laptop.handle_timer(pair.now)
    laptop.poll(pair.now, established=True)
    while laptop.next_event() is not None:
        pass
    answers: list[bytes] = []  # what home sends back, a round trip later
    for payload, _ in datagrams(laptop, pair.now, True):
        home.receive(payload, A_ADDR, pair.now)
        if split:
            # Home runs between any two of the laptop's first datagrams: a ping read alone
            # tells home the laptop is back, and home opens a channel of its own before the
            # laptop's announce arrives. Each new channel then names the other's old one, and
            # the laptop's first data is under way before home's announce reaches it.
            answers += run_alone(home, pair.now)
    stream: int | None = None

    def backlog_arrives() -> None:
        for payload in backlog:
            laptop.receive(payload, B_ADDR, pair.now)

    def answers_arrive() -> None:
        for payload in answers:
            laptop.receive(payload, B_ADDR, pair.now)

    # The local connection is made before the backlog is read, or after (the loop's order).
    pending: list[Callable[[], None]] = [lambda: None] * connect_first + [
        backlog_arrives, answers_arrive]
    resets: list[StreamReset] = []
    for step in range(400):  # 4 s
        if pending:
            pending.pop(0)()
        if stream is None and up(laptop):  # the local connection waited until now
            assert laptop.channel is not None
            stream = laptop.channel.open_stream()
            laptop.channel.write(stream, b"ssh after the lid opened")
        if split and step < 20:
            # The laptop's first datagrams reach home one wake-up each: home runs (polls, sends)
            # between any two of them.
            laptop.poll(pair.now, established=True)
            while laptop.next_event() is not None:
                pass
            for payload, _ in datagrams(laptop, pair.now, True):
                home.receive(payload, A_ADDR, pair.now)
                for answer in run_alone(home, pair.now):
                    laptop.receive(answer, B_ADDR, pair.now)
        pair.step(0.01)
        resets += [e for side in ("a", "b") for e in pair.channel_events[side]
                   if isinstance(e, StreamReset) and e.stream_id == stream]
        pair.channel_events = {"a": [], "b": []}
        if stream is not None and step > 100:
            break
    assert stream is not None, laptop.state(pair.now)
    assert home.channel is not None
    assert home.channel.read(stream) == b"ssh after the lid opened"
    assert not resets, resets
    assert laptop.state(pair.now) == "direct" and home.state(pair.now) == "direct"


def test_a_late_packet_for_the_replaced_channel_does_not_reach_the_new_one() -> None:
    """What home sent the laptop's old channel while it slept waits in the socket; read after
    the new channel opened, it must not be taken as that channel's (it names the old one, and
    comes from home's old channel, not from a new one that pairs)."""
    pair = laptop_and_home(laptop_is_client=True)
    laptop, home = pair.a, pair.b
    assert home.channel is not None
    home.channel.ping()
    late = [payload for payload in run_alone(home, pair.now) if len(payload) > 9]
    assert late, "home's channel sent nothing to hold back"
    old_incarnation = laptop.incarnation
    pair.now += 40.0  # the laptop wakes: its channel died of silence meanwhile
    laptop.handle_timer(pair.now)
    assert laptop.channel is not None and laptop.channel.is_closed
    laptop.poll(pair.now, established=True)
    assert laptop.incarnation != old_incarnation  # a new channel, named anew
    for payload in late:
        laptop.receive(payload, B_ADDR, pair.now)
    assert laptop.channel is not None and laptop.channel.stats().packets_received == 0
    assert laptop.peer_incarnation == home.incarnation



def test_a_new_process_does_not_pair_with_a_channel_that_heard_nothing() -> None:
    """Pairing is for two channels replaced by live processes. Home takes the laptop's first
    stream (its service accepts the connection) and is killed before any answer leaves: the
    laptop's channel has heard nothing, yet home's successor must not get that stream again (its
    first bytes would reach the service twice); the laptop resets it, as for any restart."""
    pair = laptop_and_home(laptop_is_client=True, first_bytes=False)
    laptop, home = pair.a, pair.b
    assert laptop.channel is not None and not laptop.channel.heard
    stream = laptop.channel.open_stream()
    laptop.channel.write(stream, b"POST /order")
    for payload in run_alone(laptop, pair.now):
        home.receive(payload, A_ADDR, pair.now)
    assert home.channel is not None and home.channel.read(stream) == b"POST /order"
    # Home is killed before its answer leaves; its successor has a new Peer for the laptop.
    pair.b = make_peer(home.static, laptop.static, 4, now=pair.now)
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    pair.run(1.0)
    assert ChannelClosed("peer restarted", 0, by_peer=True) in pair.channel_events["a"]
    assert pair.b.channel is not None and pair.b.channel.read(stream) == b""
