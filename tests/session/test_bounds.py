"""Bounded sessions (issue 12, findings 6 and 11), each attack made through the wire format.

A member knows the network psk, so it can mint static keys and send real initiations from each:
`fresh_initiation` builds one with the handshake API, as such a member would. The attacks:

- a flood of initiations from fresh keys used to grow one session each, for ever (3.5 KB each):
  now at most `max_sessions`, the rest refused, and idle ones removed with their indices;
- a flood of fresh keys used to push a victim's initiation timestamp out of the replay store
  (65,536 entries), after which a captured initiation of the victim was accepted again and moved
  the victim's endpoint to the replayer: now no newcomer can push out the entry of a peer that
  has a session;
- a restart forgot every timestamp: the replay table now survives it (`ReplayFile`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.support.session_harness import (
    NETWORK_SECRET_PSK,
    WALL_EPOCH,
    Net,
    SeededRng,
    drain_events,
    make_device,
)
from tunnel.addresses import Addr
from tunnel.node.replayfile import REPLAY_FILE, ReplayFile
from tunnel.session import crypto, handshake
from tunnel.session.constants import MAX_CANDIDATES, MAX_SESSIONS, SESSION_IDLE_LIMIT
from tunnel.session.cookie import CookieGenerator
from tunnel.session.device import Device
from tunnel.session.events import SessionRemoved
from tunnel.session.timestamps import InitiationTimestamps, decode, encode

B_ADDR = ("10.0.0.2", 51820)
VICTIM_ADDR = ("10.0.0.1", 40001)
ATTACKER_ADDR = ("203.0.113.9", 6666)


def fresh_initiation(responder: Device, rng: SeededRng, now: float) -> bytes:
    """A valid initiation from a static key minted just now (what a member can do at will)."""
    identity = handshake.Identity.create(crypto.generate_private_key(rng), NETWORK_SECRET_PSK)
    message, _pending = handshake.create_initiation(
        identity, responder.public_key, rng(4), crypto.generate_private_key(rng),
        WALL_EPOCH + now, CookieGenerator(responder.public_key, NETWORK_SECRET_PSK), now)
    return message


def flood(device: Device, count: int, now: float, seed: int = 99) -> None:
    """`count` initiations from fresh keys, each from its own port, worked off as they come."""
    rng = SeededRng(seed)
    for i in range(count):
        addr: Addr = ("198.51.100.7", 1024 + i)
        device.receive(fresh_initiation(device, rng, now), addr, now, WALL_EPOCH + now)
        if device.pending_handshakes >= 32:
            device.handle_timer(now, WALL_EPOCH + now)
    while device.pending_handshakes:
        device.handle_timer(now, WALL_EPOCH + now)
    device.datagrams_to_send()


def indices_per_key(device: Device) -> int:
    return max((len([k for k in device.indices.keypairs.values() if k.session is s])
                for s in device.sessions), default=0)


def test_a_flood_of_fresh_keys_is_capped_then_reaped() -> None:
    net = Net()
    victim = net.add(VICTIM_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    victim.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH)
    net.settle()
    flood(b, MAX_SESSIONS + 50, net.now)
    assert len(b.sessions) == MAX_SESSIONS  # the victim's and 1,023 of the flood's
    assert b.counters.session_limit == 51
    assert len(b.indices) <= 4 * MAX_SESSIONS and indices_per_key(b) <= 3
    # The victim keeps talking (persistent keepalives); the flood's sessions never confirm.
    net.advance(SESSION_IDLE_LIMIT + 1)
    assert [s.peer_public for s in b.sessions] == [victim.public_key]
    assert b.counters.sessions_removed == MAX_SESSIONS - 1
    removed = [e for e in drain_events(b) if isinstance(e, SessionRemoved)]
    assert len(removed) == MAX_SESSIONS - 1
    assert set(b.indices.keypairs.values()) <= {
        k for k in b.indices.keypairs.values() if k.session.peer_public == victim.public_key}
    assert not b.indices.handshakes
    # Room again: a newcomer is served.
    flood(b, 1, net.now, seed=7)
    assert len(b.sessions) == 2


def test_a_full_table_refuses_newcomers_but_keeps_serving_its_peers() -> None:
    net = Net()
    victim = net.add(VICTIM_ADDR, make_device(1))
    b = net.add(B_ADDR, Device(crypto.generate_private_key(SeededRng(2)), NETWORK_SECRET_PSK,
                               rng=SeededRng(2), max_sessions=4))
    victim.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH)
    net.settle()
    flood(b, 10, net.now)
    assert len(b.sessions) == 4 and b.counters.session_limit == 7
    session = victim.get_session(b.public_key)
    assert session is not None
    session.send(b"still here", net.now)
    net.settle()
    assert b.counters.bad_tag == 0 and b.counters.unknown_index == 0


def test_a_captured_initiation_stays_refused_however_many_fresh_keys_follow() -> None:
    net = Net()
    victim = net.add(VICTIM_ADDR, make_device(1))
    b = net.add(B_ADDR, Device(crypto.generate_private_key(SeededRng(2)), NETWORK_SECRET_PSK,
                               rng=SeededRng(2), max_sessions=8))
    b._timestamps = InitiationTimestamps(16)  # a small store, to overflow it quickly
    victim.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH)
    net.settle()
    captured = next(s.data for s in net.captured if s.dst == B_ADDR and s.data[0] == 1)
    for round_ in range(5):  # 35 fresh keys through a store of 16, reaped between rounds
        flood(b, 7, net.now, seed=100 + round_)
        net.advance(SESSION_IDLE_LIMIT + 1)
    victim_session = b.get_session(victim.public_key)
    assert victim_session is not None and victim_session.endpoint == VICTIM_ADDR
    replays = b.counters.replay
    b.receive(captured, ATTACKER_ADDR, net.now, WALL_EPOCH + net.now)
    b.handle_timer(net.now, WALL_EPOCH + net.now)
    assert b.counters.replay == replays + 1
    assert victim_session.endpoint == VICTIM_ADDR and not b.datagrams_to_send()


def test_the_replay_table_survives_a_restart(tmp_path: Path) -> None:
    net = Net()
    victim = net.add(VICTIM_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    victim.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH)
    net.settle()
    captured = next(s.data for s in net.captured if s.dst == B_ADDR and s.data[0] == 1)
    ReplayFile(tmp_path).save(b, net.now)
    path = tmp_path / REPLAY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert decode(path.read_bytes()) == b.replay_table()

    def restarted(load: bool) -> Device:
        device = make_device(2)  # the same static key, all else new: a restarted node
        if load:
            ReplayFile(tmp_path).load_into(device)
        device.receive(captured, ATTACKER_ADDR, net.now, WALL_EPOCH + net.now)
        device.handle_timer(net.now, WALL_EPOCH + net.now)
        return device

    # Without the table (WireGuard, and this node before) the replay is answered...
    forgetful = restarted(load=False)
    assert forgetful.get_session(victim.public_key) is not None
    assert [dst for _data, dst in forgetful.datagrams_to_send()] == [ATTACKER_ADDR]
    # ... with it, refused without a reply or any state.
    remembering = restarted(load=True)
    assert remembering.counters.replay == 1 and not remembering.sessions
    assert not remembering.datagrams_to_send()


def test_a_damaged_replay_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / REPLAY_FILE).write_bytes(encode({bytes(32): bytes(12)})[:-1])
    device = make_device(2)
    ReplayFile(tmp_path).load_into(device)
    assert device.replay_table() == {}
    assert decode(b"") is None and decode(b"ptnts1\n\0") == {}


def test_the_table_forgets_only_peers_without_a_session() -> None:
    table = InitiationTimestamps(4)
    live = {b"v" * 32}
    table.record(b"v" * 32, b"\x01" * 12, live)
    for i in range(100):
        table.record(i.to_bytes(32, "big"), b"\x02" * 12, live)
    assert len(table) == 4 and table.get(b"v" * 32) == b"\x01" * 12
    assert table.is_replay(b"v" * 32, b"\x01" * 12)
    assert not table.is_replay(b"v" * 32, b"\x01" * 11 + b"\x02")


def test_addresses_one_session_tries_stay_bounded_and_the_newest_win() -> None:
    """A member re-introducing itself with fresh candidates (8 per introduction, at the
    rendezvous' rate) grew the victim's candidate list for ever; now the newest are kept."""
    net = Net()
    victim = net.add(VICTIM_ADDR, make_device(1))
    b = net.add(B_ADDR, make_device(2))
    rounds = [[(f"10.9.{r}.{k}", 4000 + k) for k in range(8)] for r in range(200)]
    for addrs in rounds:
        session = victim.connect(b.public_key, addrs, net.now, WALL_EPOCH)
    assert len(session.candidates) == MAX_CANDIDATES
    assert session.candidates == [a for addrs in rounds[-2:] for a in addrs]
    victim.connect(b.public_key, [B_ADDR], net.now, WALL_EPOCH)  # a real introduction at last
    net.settle()
    assert session.is_established and session.endpoint == B_ADDR
    assert len(session.candidates) == MAX_CANDIDATES
