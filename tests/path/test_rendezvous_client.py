"""Node rendezvous client against the real registry, in memory and virtual time (no sockets)."""

from __future__ import annotations

import random
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous import protocol as p
from rendezvous.admission import parse_networks
from rendezvous.cookies import CookieJar
from rendezvous.registry import REGISTRATION_TTL, SWEEP_INTERVAL, Registry
from rendezvous.store import SQLiteStore
from tests.support.virtual_rendezvous import VirtualRendezvous
from tunnel.keys.netkeys import fingerprint, network_id, short_network_id
from tunnel.path import rendezvous as rc

T0 = 1_800_000_000.0  # the harness runs one clock for both sides
SERVER = ("192.0.2.1", 7000)
NET = bytes(range(32))
OTHER_NET = bytes(range(1, 33))


class Harness(VirtualRendezvous):
    """Clients behind fixed public endpoints and one server; datagrams delivered 10 ms later,
    optional loss."""

    def __init__(self, loss: float = 0.0, seed: int = 7) -> None:
        self.rand = random.Random(seed)
        self.store = SQLiteStore()
        super().__init__({SERVER: Registry(self.store, rng=self.rand.randbytes)}, T0)
        self.loss = loss
        self.sent_by: dict[p.Endpoint, list[bytes]] = {}

    @property
    def registry(self) -> Registry:
        return self.servers[SERVER]

    @registry.setter
    def registry(self, registry: Registry) -> None:
        self.servers[SERVER] = registry

    @property
    def server_up(self) -> bool:
        return self.up[SERVER]

    @server_up.setter
    def server_up(self, up: bool) -> None:
        self.up[SERVER] = up

    def add(self, addr: p.Endpoint, names: tuple[str, ...], secret: bytes = NET,
            private: bytes | None = None, counter_start: int = 0,
            tofu: bool = False) -> rc.RendezvousClient:
        """A client at `addr`; it knows the server's key unless `tofu` (trust on first use)."""
        c = rc.RendezvousClient(secret, private or self.rand.randbytes(32), names,
                                [("10.0.0.2", addr[1])], SERVER,
                                server_key=None if tofu else self.registry.static_public,
                                rng=self.rand.randbytes, counter_start=counter_start)
        self.sent_by.setdefault(addr, [])
        return self.attach(addr, c)

    def move(self, old: p.Endpoint, new: p.Endpoint) -> None:
        """The client's NAT mapping changes (a NAT reboot, a new Wi-Fi)."""
        self.clients[new] = self.clients.pop(old)
        self.events[new] = self.events.pop(old)
        self.sent_by[new] = self.sent_by.pop(old)

    def _sent(self, src: p.Endpoint, dest: p.Endpoint, data: bytes) -> None:
        assert dest == SERVER
        self.sent_by[src].append(data)

    def _lost(self) -> bool:
        return self.rand.random() < self.loss


A = ("203.0.113.10", 40001)
B = ("198.51.100.20", 40002)
C = ("192.0.2.30", 40003)


def test_registration_reports_public_endpoint_and_peers() -> None:
    h = Harness()
    a = h.add(A, ("ssh-home",))
    h.start(a)
    (reg,) = h.take(A, rc.Registered)
    assert isinstance(reg, rc.Registered) and reg.public_endpoint == A and reg.peers == ()
    assert a.registered and a.public_endpoint == A
    b = h.add(B, ("laptop",))
    h.start(b)
    (reg_b,) = h.take(B, rc.Registered)
    assert isinstance(reg_b, rc.Registered)
    assert [(x.static, x.names, x.endpoint) for x in reg_b.peers] == [(a.static, ("ssh-home",), A)]
    (joined,) = h.take(A, rc.PeerJoined)
    assert isinstance(joined, rc.PeerJoined) and joined.peer.static == b.static


def test_refresh_every_20_seconds_and_no_spurious_events() -> None:
    h = Harness()
    a = h.add(A, ("ssh-home",))
    h.start(a, seconds=101)
    registers = [d for d in h.sent_by[A] if d[0] == p.REGISTER]
    assert len(registers) == 6  # t = 0, 20, 40, 60, 80, 100
    # A cookie is reused while younger than 45 s: fetched at t = 0 and t = 60.
    assert len([d for d in h.sent_by[A] if d[0] == p.COOKIE_REQUEST]) == 2
    kinds = [type(e) for e in h.events[A] if not isinstance(e, rc.CookieReceived)]
    assert kinds == [rc.Registered]


def test_name_conflict_reports_holder_fingerprint() -> None:
    h = Harness()
    a = h.add(A, ("ssh-home",))
    h.start(a)
    b = h.add(B, ("ssh-home",))
    h.start(b, seconds=60)
    (refused,) = h.take(B, rc.RegistrationRefused)
    assert isinstance(refused, rc.RegistrationRefused)
    assert refused.holder_fingerprint == fingerprint(a.static)
    assert fingerprint(a.static) in refused.reason and "ssh-home" in refused.reason
    assert not b.registered and b.get_timer() is None  # no retry storm


def test_connect_introduces_both_sides() -> None:
    h = Harness()
    a, b = h.add(A, ("ssh-home",)), h.add(B, ())
    h.start(a, b)
    b.request_connect("ssh-home", h.now)
    h.run(1)
    (to_b,) = h.take(B, rc.Introduced)
    (to_a,) = h.take(A, rc.Introduced)
    assert to_b == rc.Introduced("ssh-home", a.static, A, (("10.0.0.2", A[1]),), True)
    assert to_a == rc.Introduced("", b.static, B, (("10.0.0.2", B[1]),), False)
    b.request_connect("nobody", h.now)
    h.run(1)
    (refused,) = h.take(B, rc.ConnectRefused)
    assert isinstance(refused, rc.ConnectRefused) and "nobody" in refused.reason


def test_silent_peer_leaves_after_about_90_seconds_and_leave_is_immediate() -> None:
    h = Harness()
    a, b, c = h.add(A, ("a",)), h.add(B, ("b",)), h.add(C, ("c",))
    for x in (a, b, c):
        h.start(x, seconds=2)
    del h.clients[B]  # B vanishes without a word
    h.run(REGISTRATION_TTL - 5)
    assert h.take(A, rc.PeerLeft) == []
    h.run(5 + SWEEP_INTERVAL + 1)
    (left,) = h.take(A, rc.PeerLeft)
    assert isinstance(left, rc.PeerLeft) and left.static == b.static and left.names == ("b",)
    c.leave(h.now)
    h.run(1)
    (left_c,) = h.take(A, rc.PeerLeft)
    assert isinstance(left_c, rc.PeerLeft) and left_c.static == c.static
    assert set(a.peers) == set()


def test_connect_after_nat_rebinding_reregisters_then_introduces() -> None:
    h = Harness()
    a, b = h.add(A, ("ssh-home",)), h.add(B, ("laptop",))
    h.start(a, b)
    h.take(A, rc.PeerJoined)
    h.take(B, rc.Registered)
    b2 = ("198.51.100.20", 50000)
    h.move(B, b2)  # before B's next refresh, so the server still has the old endpoint
    b.request_connect("ssh-home", h.now)
    h.run(1)
    assert h.take(b2, rc.ConnectRefused) == []
    (moved,) = h.take(b2, rc.Registered)
    assert isinstance(moved, rc.Registered) and moved.public_endpoint == b2
    (intro,) = h.take(b2, rc.Introduced)
    assert isinstance(intro, rc.Introduced) and intro.peer_static == a.static
    (to_a,) = h.take(A, rc.Introduced)
    assert isinstance(to_a, rc.Introduced) and to_a.public_endpoint == b2
    (rejoined,) = h.take(A, rc.PeerJoined)
    assert isinstance(rejoined, rc.PeerJoined) and rejoined.peer.endpoint == b2


def test_list_from_an_unregistered_node() -> None:
    h = Harness()
    a, b = h.add(A, ("a",)), h.add(B, ("b",))
    h.start(a)
    b.request_list(h.now)
    h.run(1)
    (listed,) = h.take(B, rc.ListReceived)
    assert isinstance(listed, rc.ListReceived)
    assert [x.static for x in listed.peers] == [a.static]


def test_other_network_sees_nothing() -> None:
    h = Harness()
    a = h.add(A, ("a",))
    x = h.add(C, ("a",), secret=OTHER_NET)
    h.start(a, x)
    (reg_x,) = h.take(C, rc.Registered)
    assert isinstance(reg_x, rc.Registered) and reg_x.peers == ()
    assert h.take(A, rc.PeerJoined) == []
    x.request_connect("a", h.now)
    h.run(1)
    assert len(h.take(C, rc.ConnectRefused)) == 1 and h.take(A, rc.Introduced) == []


def test_lossy_path_still_registers() -> None:
    h = Harness(loss=0.4, seed=3)
    a = h.add(A, ("a",))
    h.start(a, seconds=60)
    assert a.registered


def test_unreachable_server_is_reported_once_then_recovers() -> None:
    h = Harness()
    a = h.add(A, ("a",))
    h.start(a)
    h.server_up = False
    h.run(120)
    assert len(h.take(A, rc.ServerUnreachable)) == 1
    sent_while_down = len(h.sent_by[A])
    assert sent_while_down < 40  # backoff, not a flood
    h.server_up = True
    h.run(40)
    assert a.registered and h.take(A, rc.ServerUnreachable) == []
    # The server still had A (same store), then expired it; the re-registration restores it.
    assert h.store.member(a.network, a.static, h.now) is not None


def test_restarted_node_recovers_from_stale_counter() -> None:
    h = Harness()
    static = b"\x42" * 32
    a = h.add(A, ("a",), private=static)
    h.start(a, seconds=50)
    a2 = h.add(A, ("a",), private=static)  # same key, counter from 0 again
    h.start(a2, seconds=2)
    assert a2.registered
    assert h.registry.stats["stale_counter"] >= 1


def test_server_restart_on_same_store_is_invisible_to_nodes() -> None:
    h = Harness()
    a, b = h.add(A, ("a",)), h.add(B, ("b",))
    h.start(a, b, seconds=5)
    h.registry = Registry(h.store, rng=random.Random(1234).randbytes,
                          static_private=h.registry.static_private)  # reloaded from its file
    h.run(200)
    for addr in (A, B):
        kinds = {type(e) for e in h.events[addr]}
        assert rc.PeerLeft not in kinds and rc.ServerUnreachable not in kinds
    assert set(a.peers) == {b.static}


def test_off_path_replies_are_ignored() -> None:
    h = Harness()
    a = h.add(A, ("a",))
    h.start(a)
    state = (a.registered, dict(a.peers), a.public_endpoint)
    fake = p.Peer(b"\x66" * 32, ("192.0.2.66", 1), 0, ("evil",))
    forged = [
        p.encode_reply(p.Joined(b"\x00" * 8, fake)),
        p.encode_reply(p.RegisterReply(b"\x00" * 8, ("192.0.2.66", 1), 0, 1, (fake,))),
        p.encode_reply(p.Introduced(b"\x00" * 8, fake.static, fake.endpoint, (), (), bytes(16))),
        p.encode_reply(p.CookieReply(b"\x00" * 8, b"\x00" * 20, ("192.0.2.66", 1),
                                     b"\x66" * 32)),
    ]
    for data in forged:
        assert a.receive_datagram(data, SERVER, h.now)
        assert not a.receive_datagram(data, ("192.0.2.66", 7000), h.now)
    assert (a.registered, dict(a.peers), a.public_endpoint) == state
    assert a.next_event() is None and a.dropped == len(forged)


def test_relay_envelopes_carry_the_token_of_the_introduction() -> None:
    h = Harness()
    a, b = h.add(A, ("a",)), h.add(B, ("b",))
    assert a.wrap_relay(b.static, b"payload") is None  # no introduction, no token: not sent
    h.start(a, b)
    a.request_connect("b", h.now)
    h.run(1)
    to_b, to_a = a.wrap_relay(b.static, b"payload"), b.wrap_relay(a.static, b"back")
    assert to_b is not None and to_a is not None and to_b[0] == p.RELAY_TO
    assert to_b[1:17] != to_a[1:17]  # one grant per direction
    # The server forwards each to the other side under the sender's key, same size.
    (fwd,) = h.registry.handle(to_b, A, h.now)
    assert fwd.addr == B and p.decode_relay_from(fwd.data) == (a.static, b"payload")
    assert b.unwrap_relay(fwd.data) == (a.static, b"payload") and len(fwd.data) == len(to_b)
    (back,) = h.registry.handle(to_a, B, h.now)
    assert back.addr == A and a.unwrap_relay(back.data) == (b.static, b"back")
    # Not toward anyone else, and a relay envelope is no rendezvous message.
    assert a.wrap_relay(b"\x01" * 32, b"payload") is None
    assert a.unwrap_relay(to_b) is None and not a.receive_datagram(to_b, SERVER, h.now)


def _registered_client() -> tuple[Harness, rc.RendezvousClient]:
    h = Harness()
    a, b = h.add(A, ("a",)), h.add(B, ("b",))
    h.start(a, b, seconds=2)
    return h, a


FUZZ_H, FUZZ_A = _registered_client()


def _state(c: rc.RendezvousClient) -> tuple[object, ...]:
    return (c.registered, dict(c.peers), c.public_endpoint, c.get_timer(),
            sorted(c._pending), c._cookie)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises_nor_changes_state(data: bytes) -> None:
    before = _state(FUZZ_A)
    FUZZ_A.receive_datagram(data, SERVER, FUZZ_H.now)
    assert _state(FUZZ_A) == before
    assert FUZZ_A.next_event() is None and FUZZ_A.datagrams_to_send() == []


Mutator = Callable[[bytes], bytes]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([p.JOINED, p.LEFT, p.INTRODUCED, p.REGISTERED, p.REFUSED, p.COOKIE]),
       st.binary(max_size=200))
def test_typed_garbage_with_wrong_nonce_is_dropped(kind: int, body: bytes) -> None:
    before = _state(FUZZ_A)
    FUZZ_A.receive_datagram(bytes([kind]) + b"\xff" * 8 + body, SERVER, FUZZ_H.now)
    assert _state(FUZZ_A) == before and FUZZ_A.next_event() is None


def test_large_network_member_list_spans_pages() -> None:
    h = Harness()
    clients = [h.add((f"198.51.100.{i + 1}", 41000 + i), (f"node-{i:02d}",)) for i in range(60)]
    for c in clients:
        h.start(c, seconds=2)
    last = clients[-1]
    assert len(last.peers) == 59
    pages = [d for d in h.sent_by[(f"198.51.100.{60}", 41059)] if d[0] == p.REGISTER]
    assert len(pages) == 1  # one request, answered by several REGISTERED pages
    assert h.registry.stats["accepted"] >= 60
    assert all(len(c.peers) == 59 for c in clients)
    assert len(p.paginate(list(last.peers.values()))) >= 2


class RefusingJar(CookieJar):
    """A server whose cookies never verify (clock skew across servers, a broken deployment)."""

    def check(self, cookie: bytes, addr: p.Endpoint, now: float) -> bool:
        return False


def test_server_refusing_every_cookie_causes_no_ping_pong() -> None:
    h = Harness()
    a = h.add(A, ("a",))
    real = h.registry.cookies
    h.registry.cookies = RefusingJar(bytes(32))
    h.start(a, seconds=10)
    # Without a cap each COOKIE reply would trigger a resend: ~500 requests in 10 s at 20 ms RTT.
    assert len(h.sent_by[A]) < 30
    assert not a.registered
    h.registry.cookies = real
    h.run(20)
    assert a.registered


def test_changing_names_reregisters_and_reports() -> None:
    h = Harness()
    a, b = h.add(A, ("ssh-home",)), h.add(B, ("laptop",))
    h.start(a, b)
    h.take(A, rc.Registered)
    h.take(B, rc.PeerJoined)
    a.names = ("ssh-home", "web")
    h.start(a)
    (again,) = h.take(A, rc.Registered)
    assert isinstance(again, rc.Registered) and again.public_endpoint == A
    (renamed,) = h.take(B, rc.PeerJoined)
    assert isinstance(renamed, rc.PeerJoined) and renamed.peer.names == ("ssh-home", "web")
    a.names = ("ssh-home", "web", "laptop")  # held by B
    h.start(a)
    (refused,) = h.take(A, rc.RegistrationRefused)
    assert isinstance(refused, rc.RegistrationRefused)
    assert refused.holder_fingerprint == fingerprint(b.static)


def test_health_tracks_answers_and_a_silent_server() -> None:
    h = Harness()
    a = h.add(A, ("ssh-home",))
    start = h.now
    assert a.health(h.now) == rc.Health(False, (), None, None)
    a.start(h.now)
    h.server_up = False
    h.run(3)  # asking, never answered
    health = a.health(h.now)
    assert not health.registered and health.last_answer is None
    assert health.unanswered == h.now - start
    h.server_up = True
    h.run(2)  # the retransmission at 3 s is answered
    health = a.health(h.now)
    assert health.registered and health.names == ("ssh-home",) and health.unanswered is None
    assert health.last_answer is not None and health.last_answer < 2
    answered_at = h.now - health.last_answer
    h.server_up = False
    h.run(30)  # the refresh at 20 s goes unanswered
    health = a.health(h.now)
    assert health.last_answer == h.now - answered_at
    assert health.unanswered is not None and health.unanswered >= rc.SILENT_AFTER
    assert not health.registered and health.names == ()
    assert a.registered  # the last registration stands; only nothing vouches for it now
    h.server_up = True
    h.run(20)
    health = a.health(h.now)
    assert health.registered and health.unanswered is None
    assert health.last_answer is not None and health.last_answer < 20


def test_health_names_are_the_acknowledged_ones() -> None:
    h = Harness()
    a, b = h.add(A, ("ssh-home",)), h.add(B, ("laptop",))
    h.start(a, b)
    a.names = ("ssh-home", "laptop")  # held by B: refused
    h.start(a)
    assert a.health(h.now).names == () and not a.health(h.now).registered
    assert b.health(h.now).names == ("laptop",)


def test_a_network_the_server_does_not_serve_is_told_so_with_its_id() -> None:
    h = Harness()
    h.registry = Registry(h.store, rng=h.rand.randbytes,
                          admission=parse_networks(network_id(OTHER_NET).hex(), "networks"))
    a = h.add(A, ("a",))
    h.start(a, seconds=30)
    (refused,) = h.take(A, rc.RegistrationRefused)
    assert isinstance(refused, rc.RegistrationRefused)
    assert short_network_id(network_id(NET)) in refused.reason and "--networks" in refused.reason
    assert not a.registered and a.get_timer() is None  # no retry storm
