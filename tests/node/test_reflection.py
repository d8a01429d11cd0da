"""Issue 12, finding 3 (reflection): a member aims a victim node at addresses of its choice.

The attack, through the public sans-IO API on virtual time: an attacker member registers with 8
LAN candidates it picked (other hosts, not its own) and asks the rendezvous for the victim again
and again, with a fresh list each time. Every request makes the rendezvous send the victim an
INTRODUCED with those candidates. The victim is its real machines, wired as the node shell wires
them (`tunnel/node/node.py`): a `Peer` with its `PathManager`, and a session `Device` whose
handshake initiations go out only where `Peer.may_send_initiation` allows. Every datagram the
victim sends is counted against the bytes the attacker sent to the rendezvous.

Before the fix the victim probed every candidate ever announced, every 0.2 s for 10 s and every
5 s after that for ever, and the session retransmitted its initiation to all of them: thousands
of datagrams for a few kilobytes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from tunnel.addresses import Addr, is_relay
from tunnel.node.peer import HandshakeWanted, Peer
from tunnel.path.candidates import CandidatePolicy
from tunnel.path.manager import PathManager
from tunnel.path.probebudget import ProbeBudget
from tunnel.session import crypto
from tunnel.session.device import Device
from tunnel.session.wire import is_initiation, payload_bytes

WALL_EPOCH = 1_700_000_000.0
ATTACKER_PUBLIC: Addr = ("198.51.100.66", 40000)  # where the rendezvous sees the attacker
# What the attacker pays per round: a REGISTER with its new LAN list and a CONNECT for the
# victim's name. On today's wire they are 232 and 174 bytes; the test charges 64 bytes each, the
# size of the smallest message the rendezvous takes at all (a cookie request), so the bound holds
# whatever the framing of the rendezvous link becomes.
ATTACKER_BYTES_PER_ROUND = 2 * 64
STEP = 0.05  # s of virtual time per turn of the shell


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def aimed_lan(round_: int) -> list[Addr]:
    """The attacker's 8 LAN candidates of one round: all private, so the policy keeps them (the
    worst case), and new every round."""
    return [(f"10.66.{round_ % 250}.{i + 1}", 7000 + i) for i in range(8)]


class Victim:
    """The victim node's machines for one peer (the attacker), routed like `Node` routes them."""

    def __init__(self, attacker_static: bytes) -> None:
        rng = seeded(1)
        self.device = Device(crypto.generate_private_key(rng), bytes(32), rng=rng)
        self.peer = Peer(
            static=attacker_static,
            path=PathManager(started=0.0, policy=CandidatePolicy(), budget=ProbeBudget()),
            is_client=False,
            rng=seeded(2),
        )
        self.initiation: bytes | None = None  # the latest one, for punching resends
        self.sent: Counter[Addr] = Counter()

    def send(self, data: bytes, addr: Addr) -> None:
        if not is_relay(addr):  # the relay goes to the rendezvous, which rate-limits it
            self.sent[addr] += 1

    def turn(self, now: float) -> None:
        """One flush of `Node._flush_machines` (after `Node._on_timer`)."""
        wall = WALL_EPOCH + now
        if (deadline := self.peer.get_timer()) is not None and deadline <= now:
            self.peer.handle_timer(now)
        if (deadline := self.device.get_timer()) is not None and deadline <= now:
            self.device.handle_timer(now, wall)
        while self.device.next_event() is not None:
            pass  # the attacker never answers: only HandshakeFailed comes out
        session = self.device.get_session(self.peer.static)
        established = session is not None and session.is_established
        self.peer.poll(now, established)
        while (event := self.peer.next_event()) is not None:
            if isinstance(event, HandshakeWanted):
                self.device.connect(self.peer.static, event.addrs, now, wall)
                if event.resend and self.initiation is not None:
                    for addr in event.addrs:
                        self.send(self.initiation, addr)
        for payload, addr in self.peer.datagrams_to_send(now, established):
            self.send(payload_bytes(payload), addr)
        for data, addr in self.device.datagrams_to_send():
            if is_initiation(data):
                if not self.peer.may_send_initiation(addr, now):
                    continue
                self.initiation = data
            self.send(data, addr)


def run_attack(seconds: float, every: float) -> tuple[Victim, int, set[Addr]]:
    """The attacker re-registers with 8 new LAN candidates and connects every `every` seconds:
    the victim, the attacker's bytes to the rendezvous, and every address it aimed at."""
    victim = Victim(crypto.public_key(crypto.generate_private_key(seeded(3))))
    attacker_bytes, aimed = 0, set()
    rounds = 0
    now = 0.0
    while now < seconds:
        if now >= rounds * every:
            lan = aimed_lan(rounds)
            aimed.update(lan)
            victim.peer.on_introduced(ATTACKER_PUBLIC, lan, None, now)
            attacker_bytes += ATTACKER_BYTES_PER_ROUND
            rounds += 1
        victim.turn(now)
        now = round(now + STEP, 6)
    return victim, attacker_bytes, aimed


def test_reflection_ratio_stays_below_one_datagram_per_attacker_byte() -> None:
    for every in (2.0, 20.0):  # fast rounds, and rounds slow enough to let each schedule end
        victim, attacker_bytes, aimed = run_attack(60.0, every)
        to_aimed = sum(n for addr, n in victim.sent.items() if addr in aimed)
        total = sum(victim.sent.values())
        assert to_aimed / attacker_bytes <= 1.0, (every, to_aimed, attacker_bytes)
        assert total / attacker_bytes <= 1.0, (every, total, attacker_bytes)
        # Only the attacker's own public endpoint and the addresses it announced are probed.
        assert set(victim.sent) <= aimed | {ATTACKER_PUBLIC}


def test_aimed_addresses_are_left_alone_once_the_schedule_ends() -> None:
    """No 'every 5 s for ever': after one introduction, a candidate that never answers gets a
    bounded number of probes and then none, however long the victim runs."""
    victim = Victim(crypto.public_key(crypto.generate_private_key(seeded(4))))
    victim.peer.on_introduced(ATTACKER_PUBLIC, aimed_lan(0), None, 0.0)
    now = 0.0
    while now < 30.0:
        victim.turn(now)
        now = round(now + STEP, 6)
    after_30s = sum(victim.sent.values())
    while now < 600.0:
        victim.turn(now)
        now = round(now + STEP, 6)
    assert sum(victim.sent.values()) == after_30s
    assert after_30s <= 64


def test_candidates_outside_the_policy_are_never_probed() -> None:
    victim = Victim(crypto.public_key(crypto.generate_private_key(seeded(5))))
    outside = [("8.8.8.8", 53), ("127.0.0.1", 22), ("224.0.0.1", 5000), ("192.168.1.10", 0)]
    victim.peer.on_introduced(ATTACKER_PUBLIC, outside, None, 0.0)
    now = 0.0
    while now < 30.0:
        victim.turn(now)
        now = round(now + STEP, 6)
    assert set(victim.sent) == {ATTACKER_PUBLIC}
