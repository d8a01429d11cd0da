"""Failover between the servers of one deployment, sans-IO: two registries on one store (and
one key), clients given both; a server stops answering and its nodes register at the other
within seconds, where connects work. Virtual time, no sockets."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rendezvous import protocol as p
from rendezvous.registry import Registry
from rendezvous.store import SQLiteStore
from tests.support.virtual_rendezvous import VirtualRendezvous
from tunnel.api import Tunnel, TunnelError, rendezvous_servers
from tunnel.keys.identity import Identity
from tunnel.keys.pins import store_joined_rendezvous
from tunnel.path import rendezvous as rc

T0 = 1_800_000_000.0
S1, S2 = ("192.0.2.1", 7000), ("192.0.2.2", 7000)
NET = bytes(range(32))
A = ("203.0.113.10", 40001)
B = ("198.51.100.20", 40002)


class Deployment(VirtualRendezvous):
    """Two servers on one store; each datagram reaches the server it is addressed to, if up,
    and comes back from it."""

    def __init__(self) -> None:
        rand = random.Random(5)
        store = SQLiteStore()
        key = rand.randbytes(32)
        super().__init__({addr: Registry(store, rng=random.Random(i).randbytes,
                                         static_private=key)
                          for i, addr in enumerate((S1, S2))}, T0)
        self.key = self.servers[S1].static_public
        self.sent_to: dict[p.Endpoint, int] = {S1: 0, S2: 0}
        self._rand = rand

    def add(self, addr: p.Endpoint, names: tuple[str, ...],
            servers: tuple[p.Endpoint, ...] = (S1, S2)) -> rc.RendezvousClient:
        c = rc.RendezvousClient(NET, self._rand.randbytes(32), names, [], servers[0],
                                server_key=self.key, rng=self._rand.randbytes,
                                fallbacks=servers[1:])
        return self.attach(addr, c)

    def _sent(self, src: p.Endpoint, dest: p.Endpoint, data: bytes) -> None:
        self.sent_to[dest] += 1


def test_a_silent_server_is_left_for_the_next_within_seconds_and_connects_work_there() -> None:
    d = Deployment()
    a, b = d.add(A, ("alpha",)), d.add(B, ())
    d.start(a, b)
    assert a.registered and a.server == S1
    d.take(A, rc.Registered)
    d.up[S1] = False
    killed = d.now
    d.run(rc.REFRESH_INTERVAL + 8)  # the next refresh meets the silence; 7 s later: server 2
    (moved,) = d.take(A, rc.ServerChanged)
    assert moved == rc.ServerChanged(S1, S2)
    assert a.server == S2 and a.registered and b.server == S2
    assert d.take(A, rc.Registered)  # registered there (and said so)
    member = d.servers[S2].store.member(a.network, a.static, d.now)
    assert member is not None and member.names == ("alpha",)
    assert d.now - killed <= rc.REFRESH_INTERVAL + 8
    b.request_connect("alpha", d.now)
    d.run(1)
    assert [e.peer_name for e in d.take(B, rc.Introduced)] == ["alpha"]
    assert [e.peer_static for e in d.take(A, rc.Introduced)] == [b.static]
    assert d.take(A, rc.RegistrationRefused) == []


def _left_server_1() -> tuple[Deployment, rc.RendezvousClient]:
    """A, registered at server 1, 30 s after server 1 went silent."""
    d = Deployment()
    a = d.add(A, ("alpha",))
    d.start(a)
    d.up[S1] = False
    d.run(30)
    return d, a


def test_the_first_server_is_taken_again_when_the_second_goes_silent() -> None:
    d, a = _left_server_1()
    assert a.server == S2 and a.registered
    d.up[S1], d.up[S2] = True, False
    d.run(30)
    assert a.server == S1 and a.registered
    assert [e.server for e in d.take(A, rc.ServerChanged)] == [S2, S1]


def test_one_server_is_never_left() -> None:
    d = Deployment()
    a = d.add(A, ("alpha",), servers=(S1,))
    d.start(a)
    d.up[S1] = False
    d.run(120)
    assert d.take(A, rc.ServerChanged) == [] and d.sent_to[S2] == 0
    assert len(d.take(A, rc.ServerUnreachable)) == 1


def test_a_connect_asked_while_every_server_is_down_is_refused_in_the_end() -> None:
    d = Deployment()
    a, b = d.add(A, ("alpha",)), d.add(B, ())
    d.start(a, b)
    d.up[S1] = d.up[S2] = False
    b.request_connect("alpha", d.now)
    d.run(300)
    assert not b.registered
    # Both servers tried, turn about, and the connect was given up rather than kept forever.
    assert len(d.take(B, rc.ServerChanged)) >= 2
    assert not any(q.kind == p.CONNECT for q in b._pending.values())


def test_a_failover_does_not_accept_answers_from_the_server_left_behind() -> None:
    """After moving to server 2, a late reply from server 1 is not ours any more."""
    d, a = _left_server_1()
    assert a.server == S2
    assert a.receive_datagram(b"\x02" + bytes(60), S1, d.now) is False


def test_server_addresses_must_be_ip_addresses() -> None:
    with pytest.raises(ValueError, match="must be an IP address"):
        rc.RendezvousClient(NET, b"\x01" * 32, (), [], S1, fallbacks=[("rdv.example", 7000)])


def test_server_lists_are_read_from_text_lists_and_join_codes(tmp_path: Path) -> None:
    assert rendezvous_servers("192.0.2.1:7000,192.0.2.2:7000") == [S1, S2]
    assert rendezvous_servers(["192.0.2.1:7000", S2, "192.0.2.1:7000"]) == [S1, S2]
    assert rendezvous_servers(S1) == [S1]
    with pytest.raises(TunnelError, match="HOST:PORT,HOST:PORT"):
        rendezvous_servers("192.0.2.1:7000,nowhere")
    store_joined_rendezvous(tmp_path, ["192.0.2.1:7000", "192.0.2.2:7000"])
    tunnel = Tunnel(home=tmp_path, identity=Identity.generate(), network_secret=NET)
    assert (tunnel.options.rendezvous, tunnel.options.rendezvous_fallbacks) == (S1, (S2,))
