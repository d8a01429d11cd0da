"""The sans-IO `Peer` on virtual time: two peers wired to each other in memory, no sockets, no
sessions (the payloads they exchange are what a session would seal), no sleeps."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tunnel.addresses import Addr, relay_addr
from tunnel.channel.constants import NODE_STOPPING
from tunnel.channel.events import ChannelClosed, ChannelEvent, StreamReadable
from tunnel.node import payloads as nw
from tunnel.node.pathlog import peer_label
from tunnel.node.peer import (
    HandshakeWanted,
    IntroductionWanted,
    Peer,
    PeerChanged,
    PeerEvent,
    PongReceived,
    RegistrationWanted,
    SocketsReleased,
    SocketsWanted,
    channel_budget,
)
from tunnel.path.manager import (
    PUNCH_FAST_PROBES,
    RELAY_FALLBACK_AFTER,
    SILENCE_TIMEOUT,
    Kind,
    PathManager,
)
from tunnel.path.pmtu import BASE_SIZE, PROBE_SIZES
from tunnel.session.wire import payload_bytes

A_KEY, B_KEY = bytes([1]) * 32, bytes([2]) * 32
A_ADDR: Addr = ("10.0.0.1", 40001)
B_ADDR: Addr = ("10.0.0.2", 40002)


def datagrams(peer: Peer, now: float, established: bool) -> list[tuple[bytes, Addr]]:
    """`peer.datagrams_to_send`, each payload joined: a channel packet comes as its parts."""
    return [(payload_bytes(payload), addr)
            for payload, addr in peer.datagrams_to_send(now, established)]


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def make_peer(remote: bytes, local: bytes, seed: int, now: float = 0.0, **kw: object) -> Peer:
    return Peer(static=remote, path=PathManager(started=now), is_client=local < remote,
                rng=seeded(seed), **kw)  # type: ignore[arg-type]


@dataclass
class Pair:
    """Peer `a` (A's view of B) and `b` (B's view of A); `mtu` is the largest datagram the link
    between them carries, anything above it is lost."""

    a: Peer
    b: Peer
    now: float = 0.0
    mtu: int = 1500
    connected: bool = True  # False: every datagram is lost (the path went dead)
    batched: bool = False  # deliver each step's datagrams as one batch (a GRO buffer's)
    events: dict[str, list[PeerEvent]] = field(default_factory=lambda: {"a": [], "b": []})
    channel_events: dict[str, list[ChannelEvent]] = field(
        default_factory=lambda: {"a": [], "b": []})

    def step(self, dt: float = 0.0) -> None:
        self.now += dt
        sides = (("a", self.a, self.b, A_ADDR), ("b", self.b, self.a, B_ADDR))
        for side, peer, other, src in sides:
            peer.handle_timer(self.now)
            peer.poll(self.now, established=True)
            while (event := peer.next_event()) is not None:
                self.events[side].append(event)
                if isinstance(event, IntroductionWanted):
                    # The rendezvous introduces both sides again: fresh punching schedules.
                    self.a.on_introduced(B_ADDR, [], "b-name", self.now)
                    self.b.on_introduced(A_ADDR, [], None, self.now)
            while (channel_event := peer.next_channel_event()) is not None:
                self.channel_events[side].append(channel_event)
            arrived = [payload for payload, _addr in datagrams(peer, self.now, True)
                       if self.connected and len(payload) + 32 <= self.mtu]
            if self.batched:
                other.receive_batch(arrived, src, self.now)
            else:
                for payload in arrived:
                    other.receive(payload, src, self.now)

    def run(self, seconds: float, dt: float = 0.01) -> None:
        for _ in range(round(seconds / dt)):
            self.step(dt)

    def a_to_b(self, data: bytes, seconds: float = 1.0) -> bytes:
        """Write `data` on a new stream of A's channel; what B's channel read after `seconds`."""
        assert self.a.channel is not None
        stream = self.a.channel.open_stream()
        self.a.channel.write(stream, data)
        self.run(seconds)
        assert self.b.channel is not None
        return self.b.channel.read(stream)


def connected_pair(mtu: int = 1500, batched: bool = False, first_bytes: bool = True) -> Pair:
    """Two peers with open channels; `first_bytes`: a byte each way before they go quiet."""
    pair = Pair(make_peer(B_KEY, A_KEY, 1), make_peer(A_KEY, B_KEY, 2), mtu=mtu, batched=batched)
    pair.a.on_introduced(B_ADDR, [], "b-name", 0.0)
    pair.b.on_introduced(A_ADDR, [], None, 0.0)
    pair.a.on_handshake_completed(B_ADDR, 0.0)
    pair.b.on_handshake_completed(A_ADDR, 0.0)
    for peer in (pair.a, pair.b):
        assert peer.channel is not None
        if first_bytes:
            peer.channel.write(peer.channel.open_stream(), b"!")
    pair.run(0.5)
    return pair


def test_a_handshake_over_a_candidate_gives_a_direct_path_and_open_channels() -> None:
    pair = connected_pair()
    assert pair.a.ready and pair.b.ready
    assert pair.a.path.path is not None and pair.a.path.path.addr == B_ADDR
    assert pair.a.describe_path().startswith("direct public 10.0.0.2:40002")


def test_bytes_cross_the_channel_between_two_peers() -> None:
    pair = connected_pair()
    assert pair.a.channel is not None
    stream = pair.a.channel.open_stream()
    pair.a.channel.write(stream, b"hello")
    pair.channel_events["b"].clear()
    pair.run(0.5)
    assert any(isinstance(e, StreamReadable) for e in pair.channel_events["b"])
    assert pair.b.channel is not None and pair.b.channel.read(stream) == b"hello"


def test_mtu_grows_to_the_largest_size_the_path_answers() -> None:
    pair = connected_pair(mtu=9000)
    pair.run(3.0)
    assert pair.a.mtu.size == 8972 and 8972 in PROBE_SIZES
    assert pair.a.channel is not None
    assert pair.a.channel.max_packet_size == channel_budget(8972, relayed=False)


def test_mtu_stays_at_the_base_size_when_no_probe_fits() -> None:
    pair = connected_pair(mtu=1300)
    pair.run(3.0)
    assert pair.a.mtu.size == BASE_SIZE


def test_no_candidate_answers_so_the_relay_takes_over_then_direct_replaces_it() -> None:
    a = make_peer(B_KEY, A_KEY, 3)
    a.on_introduced(B_ADDR, [], "b-name", 0.0)
    events: list[PeerEvent] = []
    now = 0.0
    while now < RELAY_FALLBACK_AFTER + 0.5:  # punching toward B, which never answers
        a.poll(now, established=False)
        while (event := a.next_event()) is not None:
            events.append(event)
        now += 0.1
    punches = [e for e in events if isinstance(e, HandshakeWanted) and e.resend]
    # Fast punching (10 in 2 s), then the slower probes at 3 s and 5 s of the bounded schedule.
    assert len(punches) == PUNCH_FAST_PROBES + 2 and all(e.addrs == [B_ADDR] for e in punches)
    relay = [e for e in events if isinstance(e, HandshakeWanted) and not e.resend]
    assert relay == [HandshakeWanted([relay_addr(B_KEY)], resend=False)]
    a.on_handshake_completed(relay_addr(B_KEY), now)  # the handshake got through the relay
    a.handle_timer(now)
    a.poll(now, established=True)
    assert a.path.path is not None and a.path.path.kind == Kind.RELAY
    assert a.channel is not None
    assert a.channel.max_packet_size == channel_budget(BASE_SIZE, relayed=True)
    # Later a direct probe is answered: the direct path replaces the relay.
    a.receive(b"", B_ADDR, now + 1)
    a.poll(now + 1, established=True)
    assert a.direct and a.path.path is not None and a.path.path.addr == B_ADDR


def test_a_silent_path_asks_to_register_again_and_reintroduce_with_backoff() -> None:
    pair = connected_pair()
    pair.events["a"].clear()
    assert pair.a.channel is not None
    stream = pair.a.channel.open_stream()
    pair.connected = False  # the other side's NAT forgot us
    pair.a.channel.write(stream, b"x" * 1000)
    pair.run(SILENCE_TIMEOUT + 1.0)
    assert any(isinstance(e, RegistrationWanted) for e in pair.events["a"])
    # Once no direct candidate works, introductions are asked again, further and further apart.
    pair.run(40.0, dt=0.05)
    asked = [e for e in pair.events["a"] if isinstance(e, IntroductionWanted)]
    assert asked and all(e.name == "b-name" for e in asked)
    assert 3 <= len(asked) <= 6  # 3 s, then 6, 12, 24 ... not every poll


def test_a_restarted_peer_resets_the_old_channel_and_opens_a_new_one() -> None:
    pair = connected_pair()
    old_channel, old_incarnation = pair.a.channel, pair.a.peer_incarnation
    assert old_channel is not None and old_incarnation == pair.b.incarnation
    # B restarts: a new process, a new Peer for A, a new incarnation.
    pair.b = make_peer(A_KEY, B_KEY, 99, now=pair.now)
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    assert pair.b.channel is not None
    stream = pair.b.channel.open_stream()
    pair.b.channel.write(stream, b"after restart")
    pair.run(0.2)
    assert ChannelClosed("peer restarted", 0, by_peer=True) in pair.channel_events["a"]
    assert pair.a.channel is not old_channel
    assert pair.a.peer_incarnation == pair.b.incarnation != old_incarnation
    assert pair.a.channel is not None and pair.a.channel.read(stream) == b"after restart"


def test_packets_for_a_dead_incarnation_are_ignored() -> None:
    pair = connected_pair()
    assert pair.b.channel is not None
    stale = bytes((nw.PAYLOAD_CHANNEL,)) + pair.a.incarnation + b"\xde\xad\xbe\xef" + b"junk"
    before = pair.b.channel.stats()
    pair.b.receive(stale, A_ADDR, pair.now)
    assert pair.b.channel.stats() == before and pair.b.peer_incarnation == pair.a.incarnation


def test_a_ping_is_answered_with_its_round_trip() -> None:
    pair = connected_pair()
    pair.events["a"].clear()
    txid = pair.a.ping(pair.now)
    assert txid is not None
    sent = datagrams(pair.a, pair.now, established=True)
    pair.now += 0.003
    for payload, _ in sent:
        pair.b.receive(payload, A_ADDR, pair.now)
    for payload, _ in datagrams(pair.b, pair.now, established=True):
        pair.a.receive(payload, B_ADDR, pair.now)
    pongs = []
    while (event := pair.a.next_event()) is not None:
        if isinstance(event, PongReceived):
            pongs.append(event)
    assert [p.txid for p in pongs] == [txid] and abs(pongs[0].rtt - 0.003) < 1e-9


def test_port_prediction_opens_sockets_asks_the_peer_and_keeps_the_winner() -> None:
    a = make_peer(B_KEY, A_KEY, 5, nat_randomizes=True)
    a.on_introduced(B_ADDR, [], "b-name", 0.0)
    a.on_handshake_completed(relay_addr(B_KEY), 0.0)
    a.poll(0.0, established=True)
    events = []
    while (event := a.next_event()) is not None:
        events.append(event)
    assert SocketsWanted(B_ADDR, 256) in events
    request = [d for d in datagrams(a, 0.0, True) if d[0] == bytes((nw.PAYLOAD_PREDICTION,))]
    assert request == [(bytes((nw.PAYLOAD_PREDICTION,)), relay_addr(B_KEY))]
    targets = [(f"10.0.0.2|{i}", 40002) for i in range(4)]
    a.sockets_opened(targets)
    a.poll(0.1, established=True)
    pinged = {addr for _, addr in datagrams(a, 0.1, True)}
    assert set(targets) <= pinged
    a.receive(b"", targets[2], 0.2)  # an authenticated packet through socket 2: direct now
    a.poll(0.2, established=True)
    released = [e for e in iter(a.next_event, None) if isinstance(e, SocketsReleased)]
    assert released == [SocketsReleased(targets[2])]


def test_the_other_side_of_a_prediction_probes_random_ports_at_a_bounded_rate() -> None:
    b = make_peer(A_KEY, B_KEY, 6)
    b.on_introduced(A_ADDR, [], None, 0.0)
    b.on_handshake_completed(relay_addr(A_KEY), 0.0)
    b.receive(bytes((nw.PAYLOAD_PREDICTION,)), relay_addr(A_KEY), 0.0)
    assert b.prober is not None
    sent: list[Addr] = []
    now = 0.0
    while now < 2.0:
        b.poll(now, established=True)
        sent += [addr for _, addr in datagrams(b, now, True) if addr[0] == A_ADDR[0]]
        now += 0.05
    assert 80 <= len(sent) <= 110  # 50 a second
    assert len({port for _, port in sent}) > 60


def test_an_idle_direct_path_stays_direct_for_ten_minutes_without_a_repunch() -> None:
    pair = connected_pair()
    pair.events["a"].clear()
    pair.events["b"].clear()
    assert pair.a.path.path is not None and pair.b.path.path is not None
    path_a, path_b = pair.a.path.path.addr, pair.b.path.path.addr
    pair.run(600.0, dt=1.0)  # nothing sent either way: quiet, not silent
    assert pair.a.path.path is not None and pair.a.path.path.addr == path_a
    assert pair.b.path.path is not None and pair.b.path.path.addr == path_b
    for side in ("a", "b"):
        assert not [e for e in pair.events[side]
                    if isinstance(e, RegistrationWanted | IntroductionWanted)]
    assert pair.a.state(pair.now) == "direct" and pair.b.state(pair.now) == "direct"
    # The first byte after the idle spell goes out at once on the same path.
    assert pair.a_to_b(b"after idle") == b"after idle"


def test_a_peer_that_restarted_and_sends_nothing_is_found_through_its_announce() -> None:
    pair = connected_pair()
    old = pair.a.channel
    pair.b = make_peer(A_KEY, B_KEY, 77, now=pair.now)  # B restarted; it has nothing to send
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    assert pair.a.channel is not None
    stream = pair.a.channel.open_stream()
    pair.a.channel.write(stream, b"to the old B")  # addressed to B's dead incarnation
    pair.run(1.0)
    assert ChannelClosed("peer restarted", 0, by_peer=True) in pair.channel_events["a"]
    assert pair.a.channel is not old and pair.a.peer_incarnation == pair.b.incarnation
    assert pair.a_to_b(b"hello again") == b"hello again"  # new streams work on the new channels


def test_a_crashed_peers_successor_is_back_only_once_its_channel_says_who_it_is() -> None:
    """The peer crashed while A was idle and restarted; its first packet on the new session is
    a probe, not its channel's announce. Were A back at that probe, a local connection waiting
    meanwhile would take a stream on the dead process's channel, reset a moment later."""
    pair = connected_pair()
    pair.connected = False
    pair.run(15.0, dt=0.5)  # A's PING unanswered: reconnecting
    assert pair.a.state(pair.now).startswith("reconnecting")
    old = pair.a.channel
    successor = make_peer(A_KEY, B_KEY, 78, now=pair.now)
    pair.a.on_handshake_completed(B_ADDR, pair.now)  # the successor's session
    pair.a.receive(nw.encode_ping(nw.PAYLOAD_PING, bytes(nw.TXID_SIZE)), B_ADDR, pair.now)
    assert pair.a.state(pair.now).startswith("reconnecting")  # a probe says nothing of who
    successor.on_handshake_completed(A_ADDR, pair.now)
    pair.b, pair.connected = successor, True
    pair.run(1.0)  # its announce arrives
    assert pair.a.state(pair.now) == "direct" and pair.a.channel is not old
    assert pair.a.peer_incarnation == successor.incarnation
    assert pair.a_to_b(b"on the successor's channel") == b"on the successor's channel"


def test_a_peer_lost_and_found_again_on_a_new_session_keeps_its_channel() -> None:
    """The same process behind an outage long enough for a new session: its announce names
    the incarnation A knows, so A is back on the channel it had, streams and all."""
    pair = connected_pair()
    pair.connected = False
    pair.run(15.0, dt=0.5)
    old = pair.a.channel
    pair.a.on_handshake_completed(B_ADDR, pair.now)
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    pair.connected = True
    pair.run(1.0)
    assert pair.a.reconnecting_since is None and pair.a.channel is old


def test_a_peer_heard_again_is_back_at_the_answer_to_a_channel_ping() -> None:
    """Its first packets after an outage are probes, which do not say whether it is the process
    of A's channel; a PING on that channel asks, and its ACK says so within a round trip (the
    channel's own retransmission, backed off by the outage, came 0.5 s later here)."""
    pair = connected_pair()
    pair.connected = False
    pair.run(25.0, dt=0.5)
    assert pair.a.state(pair.now).startswith("reconnecting")
    pair.connected = True
    pair.run(0.2)
    assert pair.a.state(pair.now) == "direct"


def test_state_says_reconnecting_then_unreachable_then_direct_again() -> None:
    pair = connected_pair()
    assert pair.a.channel is not None
    pair.connected = False
    pair.a.channel.write(pair.a.channel.open_stream(), b"x" * 500)
    pair.run(SILENCE_TIMEOUT + 1.0)
    assert pair.a.state(pair.now).startswith("reconnecting since")
    pair.run(40.0, dt=0.1)
    assert pair.a.state(pair.now).startswith("unreachable (last heard")
    pair.connected = True
    pair.run(12.0, dt=0.05)  # background probes of the address it answered from find it
    assert pair.a.state(pair.now) == "direct"


def test_only_packets_that_need_an_answer_count_toward_silence() -> None:
    pair = connected_pair()
    assert pair.b.channel is not None
    stream = pair.b.channel.open_stream()
    pair.b.channel.write(stream, b"data from b")  # a receives it and only acknowledges
    pair.run(0.5)
    pair.connected = False  # a's acks are lost: nothing a sent needed an answer
    pair.events["a"].clear()
    pair.run(SILENCE_TIMEOUT * 3)
    assert not [e for e in pair.events["a"] if isinstance(e, RegistrationWanted)]
    assert pair.a.state(pair.now) == "direct"


@pytest.mark.parametrize("first_bytes", [True, False], ids=["after-data", "never-used"])
def test_an_idle_peer_that_crashed_is_noticed_through_the_channels_own_pings(
        first_bytes: bool) -> None:
    # never-used: `ptunnel connect` came up and nobody connected yet. Its channel never carried
    # a packet, and its keepalive once counted only from the first one: status said `direct`
    # for 95 s after the peer died.
    pair = connected_pair(first_bytes=first_bytes)
    pair.run(300.0, dt=1.0)  # idle, both alive: the channel's pings are answered
    assert pair.a.state(pair.now) == "direct"
    pair.events["a"].clear()
    pair.connected = False  # the peer crashed while the tunnel was idle
    pair.run(15.0, dt=0.5)  # a quiet channel pings every 10 s; 3 s unanswered is silence
    assert pair.a.state(pair.now).startswith("reconnecting")
    assert IntroductionWanted("b-name") in pair.events["a"]


def test_a_channel_that_died_with_its_peer_opens_again_only_once_the_peer_is_heard() -> None:
    pair = connected_pair(first_bytes=False)
    pair.connected = False  # the peer crashed
    pair.run(45.0, dt=0.5)  # its PING unanswered, the channel reaches its idle timeout
    dead = pair.a.channel
    assert dead is not None and dead.is_closed
    pair.run(120.0, dt=0.5)  # a new channel to a peer nobody hears would only say "channel open"
    assert pair.a.channel is dead
    pair.connected = True  # it is back
    pair.run(15.0, dt=0.05)
    assert pair.a.state(pair.now) == "direct"
    assert pair.a_to_b(b"on a new channel") == b"on a new channel"


def _stopped_quietly(peer: Peer, now: float, established: bool) -> list[bytes]:
    """Close `peer` as a stopping node does, then run 60 virtual seconds: what it sent and
    asked for after the close."""
    peer.close("node shutting down", NODE_STOPPING)
    sent = [payload for payload, _ in datagrams(peer, now, established)]
    asked: list[PeerEvent] = []
    for step in range(600):
        peer.handle_timer(now + step / 10)
        peer.poll(now + step / 10, established)
        while (event := peer.next_event()) is not None:
            if not isinstance(event, SocketsReleased):
                asked.append(event)
        sent += [payload for payload, _ in datagrams(peer, now + step / 10, established)]
    assert not asked, asked
    assert peer.get_timer() is None
    return sent


def test_stop_while_punching_asks_for_nothing_more() -> None:
    a = make_peer(B_KEY, A_KEY, 11)
    a.on_introduced(B_ADDR, [], "b-name", 0.0)
    a.poll(0.0, established=False)
    assert _stopped_quietly(a, 0.1, established=False) == []


def test_stop_on_the_relay_and_during_port_prediction_releases_the_sockets() -> None:
    a = make_peer(B_KEY, A_KEY, 12, nat_randomizes=True)
    a.on_introduced(B_ADDR, [], "b-name", 0.0)
    a.on_handshake_completed(relay_addr(B_KEY), 0.0)
    a.poll(0.0, established=True)
    assert SocketsWanted(B_ADDR, 256) in list(iter(a.next_event, None))
    datagrams(a, 0.0, True)
    a.close("node shutting down")
    assert SocketsReleased(None) in list(iter(a.next_event, None))
    sent = _stopped_quietly(a, 0.1, established=True)
    assert all(payload[0] == nw.PAYLOAD_CHANNEL for payload in sent)  # only the CLOSE


def test_stop_on_a_direct_path_sends_the_close_and_nothing_after() -> None:
    pair = connected_pair()
    sent = _stopped_quietly(pair.a, pair.now, established=True)
    assert sent and all(payload[0] == nw.PAYLOAD_CHANNEL for payload in sent)
    for payload in sent:
        pair.b.receive(payload, A_ADDR, pair.now)
    closed = [e for e in iter(pair.b.next_channel_event, None) if isinstance(e, ChannelClosed)]
    assert closed and closed[0].by_peer


def test_stop_while_reconnecting_asks_for_nothing_more() -> None:
    pair = connected_pair()
    assert pair.a.channel is not None
    pair.connected = False
    pair.a.channel.write(pair.a.channel.open_stream(), b"x" * 500)
    pair.run(SILENCE_TIMEOUT + 1.0)
    assert pair.a.state(pair.now).startswith("reconnecting")
    _stopped_quietly(pair.a, pair.now, established=True)


def test_a_replaced_channel_is_reset_once_on_the_other_side_never_in_a_loop() -> None:
    pair = connected_pair()
    assert pair.a.channel is not None
    pair.a.channel.close("idle timeout")  # A's channel died (a long outage): A starts a new one
    pair.channel_events["a"].clear()
    pair.channel_events["b"].clear()
    pair.run(5.0)
    restarts = {side: [e for e in events if e == ChannelClosed("peer restarted", 0, by_peer=True)]
                for side, events in pair.channel_events.items()}
    assert len(restarts["b"]) == 1 and restarts["a"] == [], restarts
    assert pair.a.peer_incarnation == pair.b.incarnation
    assert pair.b.peer_incarnation == pair.a.incarnation
    assert pair.a_to_b(b"on the new channels") == b"on the new channels"


def test_late_packets_of_a_replaced_channel_are_dropped() -> None:
    pair = connected_pair()
    old = pair.b.incarnation
    stale = bytes((nw.PAYLOAD_CHANNEL,)) + old + pair.a.incarnation  # B's old channel, late
    pair.b = make_peer(A_KEY, B_KEY, 55, now=pair.now)  # B restarted
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    pair.run(1.0)
    assert pair.a.peer_incarnation == pair.b.incarnation
    channel = pair.a.channel
    pair.channel_events["a"].clear()
    pair.a.receive(stale, B_ADDR, pair.now)  # must not count as yet another restart
    assert pair.a.channel is channel and pair.a.peer_incarnation == pair.b.incarnation
    assert not pair.a.next_channel_event()


def _bulk_with_a_restart(batched: bool) -> tuple[object, ...]:
    """Bulk both ways, a restart of B, stale and ping payloads amid the data: what each side
    ends with. Seeded, so two runs that receive alike end alike."""
    pair = connected_pair(batched=batched)
    assert pair.a.channel is not None and pair.b.channel is not None
    sent = bytes(range(256)) * 800
    up, down = pair.a.channel.open_stream(), pair.b.channel.open_stream()
    pair.a.channel.write(up, sent)
    pair.b.channel.write(down, sent[::-1])
    pair.run(0.05, dt=0.001)
    stale = bytes((nw.PAYLOAD_CHANNEL,)) + b"\xde\xad\xbe\xef" + pair.a.incarnation + b"junk"
    pair.a.ping(pair.now)  # its pong lands amid B's data
    pair.b.receive_batch([stale], A_ADDR, pair.now)
    pair.run(1.0, dt=0.001)
    received = (pair.b.channel.read(up), pair.a.channel.read(down))
    pair.b = make_peer(A_KEY, B_KEY, 99, now=pair.now)
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    assert pair.b.channel is not None
    again = pair.b.channel.open_stream()
    pair.b.channel.write(again, sent)
    pair.run(1.0, dt=0.001)
    assert pair.a.channel is not None
    return (received, pair.a.channel.read(again), pair.a.channel.stats(),
            pair.b.channel.stats(), pair.events, pair.channel_events, pair.a.peer_incarnation,
            pair.b.peer_incarnation, pair.a.path.path, pair.a.rtt)


def test_a_batch_is_received_as_its_payloads_one_by_one() -> None:
    """`receive_batch` (a GRO buffer's payloads, the hot path) ends exactly where `receive`
    of each in turn ends: data, stats, events, incarnations, path, even across a restart."""
    batched = _bulk_with_a_restart(batched=True)
    assert batched == _bulk_with_a_restart(batched=False)
    sent = bytes(range(256)) * 800
    assert batched[0] == (sent, sent[::-1]) and batched[1] == sent


def test_a_stale_or_foreign_payload_amid_a_batch_is_dropped_and_the_rest_delivered() -> None:
    pair = connected_pair()
    assert pair.a.channel is not None and pair.b.channel is not None
    stream = pair.a.channel.open_stream()
    pair.a.channel.write(stream, b"x" * 5000)
    packets = [p for p, _ in datagrams(pair.a, pair.now, established=True)]
    assert len(packets) >= 3
    stale = bytes((nw.PAYLOAD_CHANNEL,)) + b"\xde\xad\xbe\xef" + pair.a.incarnation + b"junk"
    pair.b.receive_batch([packets[0], stale, b"", *packets[1:]], A_ADDR, pair.now)
    assert pair.b.peer_incarnation == pair.a.incarnation
    assert pair.b.channel.read(stream) == b"x" * 5000


def _prediction_side(seed: int) -> Peer:
    """A's view of B with A's NAT randomizing: introduced, on the relay."""
    a = make_peer(B_KEY, A_KEY, seed, nat_randomizes=True)
    a.on_introduced(B_ADDR, [], "b-name", 0.0)
    a.on_handshake_completed(relay_addr(B_KEY), 0.0)
    return a


def _drive(a: Peer, start: float, seconds: float, step: float = 0.5) -> tuple[
        list[PeerEvent], list[float]]:
    """Poll `a` on the relay; its events and when it sent a prediction request."""
    events: list[PeerEvent] = []
    requests: list[float] = []
    now = start
    while now < start + seconds:
        a.handle_timer(now)
        a.poll(now, established=True)
        while (event := a.next_event()) is not None:
            events.append(event)
            if isinstance(event, SocketsWanted):
                a.sockets_opened([(f"{B_ADDR[0]}|{i}", B_ADDR[1]) for i in range(4)])
        requests += [now for payload, addr in datagrams(a, now, True)
                     if payload == bytes((nw.PAYLOAD_PREDICTION,)) and addr == relay_addr(B_KEY)]
        now += step
    return events, requests


def test_a_prediction_request_is_sent_again_in_case_the_relay_lost_it() -> None:
    _, requests = _drive(_prediction_side(13), 0.0, 30.0)
    assert requests == [0.0, 2.0, 4.0, 8.0]


def test_a_prediction_that_finds_nothing_is_tried_again_later_and_less_often() -> None:
    """Woken by its own timers alone, as the node does."""
    a, starts, now = _prediction_side(14), [], 0.0
    while now < 2000.0:
        a.handle_timer(now)
        a.poll(now, established=True)
        while (event := a.next_event()) is not None:
            if isinstance(event, SocketsWanted):
                starts.append(round(now))
                a.sockets_opened([(f"{B_ADDR[0]}|0", B_ADDR[1])])
        datagrams(a, now, True)
        deadline = a.get_timer()
        now = max(now + 0.001, 2000.0 if deadline is None else deadline)
    # Each attempt lasts DURATION + REFRESH (50 s); then 120 s, 240 s, 480 s, 960 s of rest.
    assert starts == [0, 170, 460, 990]


def test_a_direct_path_lost_later_gets_a_new_prediction_after_the_cooldown() -> None:
    a = _prediction_side(15)
    _drive(a, 0.0, 1.0)
    a.receive(b"", (f"{B_ADDR[0]}|2", B_ADDR[1]), 1.0)  # the prediction worked: direct
    events, _ = _drive(a, 1.0, 5.0)
    assert SocketsReleased((f"{B_ADDR[0]}|2", B_ADDR[1])) in events
    assert a.path.path is not None and a.path.path.direct
    # The path dies (a NAT reboot): data goes unanswered, and the peer is heard on the relay.
    assert a.channel is not None
    a.channel.write(a.channel.open_stream(), b"x" * 1000)
    _drive(a, 6.0, SILENCE_TIMEOUT + RELAY_FALLBACK_AFTER)
    a.receive(b"", relay_addr(B_KEY), 60.0)
    events, _ = _drive(a, 60.0, 50.0)
    assert not a.direct and not any(isinstance(e, SocketsWanted) for e in events)
    events, _ = _drive(a, 110.0, 20.0)  # the cooldown since the last attempt is over
    assert any(isinstance(e, SocketsWanted) for e in events)


def test_a_lone_payload_of_a_batch_is_heard_on_the_path_as_receive_hears_it() -> None:
    """The steady fast path of `receive_batch` (a lone message's, too) still tells the path
    that the peer was heard: after a silence longer than a candidate stays working, and while
    B awaits an answer, one payload refreshes exactly what `receive` refreshes."""
    heard = []
    for batched in (False, True):
        pair = connected_pair()
        assert pair.a.channel is not None and pair.b.channel is not None
        later = pair.now + 20.0  # past CANDIDATE_TIMEOUT: the candidate no longer "works"
        stream = pair.a.channel.open_stream()
        pair.a.channel.write(stream, b"ping")
        packets = [p for p, _ in datagrams(pair.a, later, established=True)
                   if p[0] == nw.PAYLOAD_CHANNEL]  # not the PMTU probe also due by then
        assert len(packets) == 1
        pair.b.path.on_sent(later - 1.0)  # B sent something and waits for an answer
        if batched:
            pair.b.receive_batch(packets, A_ADDR, later)
        else:
            pair.b.receive(packets[0], A_ADDR, later)
        candidate = pair.b.path.candidates[A_ADDR]
        heard.append((pair.b.path.last_heard, pair.b.path.awaiting_since, candidate.last_heard,
                      candidate.proven_at, pair.b.path.path, pair.b.channel.read(stream)))
    assert heard[0] == heard[1]
    assert heard[1][:4] == (pair.now + 20.0, None, pair.now + 20.0, pair.now + 20.0)


def awaiting(peer: Peer) -> bool:
    """Not ready and reconnecting: new local connections wait for the peer."""
    return not peer.ready and peer.reconnecting_since is not None


def test_a_peer_whose_node_stops_is_awaited_and_no_channel_opens_on_its_session() -> None:
    pair = connected_pair()
    old = pair.a.channel
    sent = _stopped_quietly(pair.b, pair.now, established=True)  # B's node stops (its CLOSE)
    pair.b = make_peer(A_KEY, B_KEY, 88, now=pair.now)  # the process is gone; nothing answers
    pair.connected = False
    for payload in sent:
        pair.a.receive(payload, B_ADDR, pair.now)
    pair.events["a"].clear()
    pair.run(5.0)  # long after the old channel has drained
    assert old is not None and old.peer_stopping
    assert pair.a.channel is old and awaiting(pair.a)  # not reopened on B's session
    assert pair.a.state(pair.now).startswith("reconnecting")
    assert PeerChanged() in pair.events["a"]
    pair.a.receive(sent[0], B_ADDR, pair.now)  # a late copy of the CLOSE: not "back"
    assert awaiting(pair.a)
    # B's node starts again: a new session, a new incarnation, and A opens the next channel.
    pair.connected = True
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    pair.run(1.0)
    assert not awaiting(pair.a) and pair.a.ready and pair.a.channel is not old
    assert pair.a.peer_incarnation == pair.b.incarnation
    assert pair.a_to_b(b"after the restart") == b"after the restart"


def test_what_the_log_says_of_a_peer_that_goes_depends_on_whether_we_reach_it_by_name(
        caplog: pytest.LogCaptureFixture) -> None:
    """`a` reaches B by name (connections of its wait for B); `b` knows A by key alone (A
    reached it, as a connecting node reaches an exposing one): A going is routine for `b`."""
    caplog.set_level(logging.INFO, logger="tunnel.node.peer")
    b_stops, a_stops = connected_pair(), connected_pair()
    for payload in _stopped_quietly(b_stops.b, b_stops.now, established=True):
        b_stops.a.receive(payload, B_ADDR, b_stops.now)
    for payload in _stopped_quietly(a_stops.a, a_stops.now, established=True):
        a_stops.b.receive(payload, A_ADDR, a_stops.now)
    for pair in (b_stops, a_stops):
        pair.connected = False  # the stopped process is gone: nothing answers
        pair.run(1.0)
    b_label, a_label = peer_label("b-name", B_KEY), peer_label(None, A_KEY)
    assert [(r.levelno, r.getMessage()) for r in caplog.records if "stopping" in r.message] == [
        (logging.INFO, f"{b_label} is stopping; new connections wait for it to come back"),
        (logging.INFO, f"{a_label} is stopping"),
    ]
    caplog.clear()
    reason = "no valid response to 18 initiations in 93 s"
    b_stops.a.on_session_lost(reason, b_stops.now)
    a_stops.b.on_session_lost(reason, a_stops.now)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"lost {b_label}: {reason}"),
        (logging.INFO, f"lost {a_label}: {reason}"),
    ]


def test_a_peer_that_closes_without_stopping_gets_a_new_channel_on_the_same_session() -> None:
    pair = connected_pair()
    assert pair.b.channel is not None
    pair.b.channel.close("idle timeout")  # B's node runs on: only the channel ended
    pair.run(5.0)
    assert pair.a.channel is not None and not pair.a.channel.peer_stopping
    assert pair.a.ready and pair.a.reconnecting_since is None
    assert pair.a_to_b(b"same session") == b"same session"


def test_a_stopped_peer_is_back_at_its_successors_first_announce() -> None:
    pair = connected_pair()
    sent = _stopped_quietly(pair.b, pair.now, established=True)
    for payload in sent:
        pair.a.receive(payload, B_ADDR, pair.now)
    pair.a.poll(pair.now, established=True)
    assert awaiting(pair.a)
    pair.b = make_peer(A_KEY, B_KEY, 89, now=pair.now)  # B's node starts again, elsewhere
    pair.b.on_handshake_completed(A_ADDR, pair.now)
    moved: Addr = ("10.0.0.2", 40999)
    announce = datagrams(pair.b, pair.now, established=True)
    assert [len(payload) for payload, _ in announce] == [9]  # a bare channel header, nothing else
    pair.events["a"].clear()
    pair.a.receive(announce[0][0], moved, pair.now)  # the only packet: no data follows it
    assert pair.a.ready and pair.a.reconnecting_since is None  # back: `status` says direct
    assert pair.a.peer_incarnation == pair.b.incarnation
    assert PeerChanged() in list(iter(pair.a.next_event, None))  # waiting connections go now
    assert pair.a.path.path is not None and pair.a.path.path.addr == moved
