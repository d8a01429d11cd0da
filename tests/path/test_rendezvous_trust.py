"""What the node's rendezvous client trusts: only its server's key, only sealed replies; what an
on-path observer of the link sees. Client against the real registry, in virtual time."""

from __future__ import annotations

import ipaddress
import random

from rendezvous import protocol as p
from rendezvous.registry import Registry
from tests.path.test_rendezvous_client import SERVER, A, B, Harness
from tunnel.path import rendezvous as rc
from tunnel.path.sealing import seal_reply


def _pair() -> tuple[Harness, rc.RendezvousClient, rc.RendezvousClient]:
    h = Harness()
    a, b = h.add(A, ("ssh-home",)), h.add(B, ("laptop",))
    h.start(a, b)
    return h, a, b


def test_an_on_path_observer_reads_no_name_key_or_lan_address() -> None:
    h, a, b = _pair()
    b.request_connect("ssh-home", h.now)
    b.request_list(h.now)
    h.run(1)
    assert h.take(B, rc.Introduced)
    assert h.take(B, rc.ListReceived)
    lan = ipaddress.ip_address("10.0.0.2").packed
    secrets = [b"ssh-home", b"laptop", a.static, b.static, a.network,
               lan + A[1].to_bytes(2, "big"), lan + B[1].to_bytes(2, "big")]
    assert len(h.wire) > 10
    for datagram in h.wire:
        for secret in secrets:
            # Before: every one of them crossed the wire in clear.
            assert secret not in datagram, (secret, datagram[:1].hex())


def test_an_on_path_observer_cannot_forge_an_introduction() -> None:
    h, a, b = _pair()
    b.request_connect("ssh-home", h.now)
    (pending,) = [q for q in b._pending.values() if q.kind == p.CONNECT]
    # Before, the observer read this nonce off the wire; grant it even that.
    nonce, fake = pending.nonce, b"\x66" * 32
    forged = p.encode_reply(p.Introduced(nonce, fake, ("192.0.2.66", 1), (), ("ssh-home",),
                                         bytes(16)))
    eve_server_key = b"\x77" * 32
    sealed_by_eve = seal_reply(forged, eve_server_key, b.static, b"\x55" * 32)
    for datagram in (forged, sealed_by_eve):
        assert b.receive_datagram(datagram, SERVER, h.now)
        assert b.next_event() is None
    h.run(1)
    (intro,) = h.take(B, rc.Introduced)
    assert isinstance(intro, rc.Introduced) and intro.peer_static == a.static  # the real one


def test_a_replayed_push_is_dropped() -> None:
    h = Harness()
    a = h.add(A, ("ssh-home",))
    h.start(a)
    b = h.add(B, ("laptop",))
    h.start(b)
    assert len(h.take(A, rc.PeerJoined)) == 1
    push = next(d for d in h.wire if d[0] == p.JOINED)
    dropped = a.dropped
    a.peers.clear()  # as if the peer had left since
    assert a.receive_datagram(push, SERVER, h.now)
    assert a.next_event() is None and a.dropped == dropped + 1 and not a.peers


def test_a_stale_counter_of_2_64_minus_1_neither_raises_nor_locks_the_client_out() -> None:
    h = Harness()
    a = h.add(A, ("ssh-home",))
    a.start(h.now)
    (register,) = [q for q in a._pending.values() if q.kind == p.REGISTER]
    # Before: a member registered our key with counter 2^64-1 and the server said so to every
    # request of ours; the client added 1 and raised OverflowError on each reply, for ever.
    # Now no member can (the key is proven), and even a broken server's word is dropped.
    for counter in (2**64 - 1, p.COUNTER_LIMIT - 1, p.COUNTER_LIMIT):
        refusal = p.encode_reply(p.Refused(register.nonce, p.STALE_COUNTER, counter=counter))
        sealed = seal_reply(refusal, h.registry.static_private, a.static, b"\x01" * 32)
        assert a.receive_datagram(sealed, SERVER, h.now)
    assert a._counter < p.COUNTER_LIMIT
    h.run(5)
    assert a.registered


def test_trust_on_first_use_learns_the_key_then_refuses_another() -> None:
    h = Harness()
    a = h.add(A, ("ssh-home",), tofu=True)
    h.start(a)
    assert h.take(A, rc.ServerKeyLearned) == [rc.ServerKeyLearned(h.registry.static_public)]
    assert a.registered and a.server_key == h.registry.static_public
    # The server is replaced by one with another key (or something impersonates it).
    old = h.registry.static_public
    h.registry = Registry(h.store, rng=random.Random(5).randbytes)
    a.request_list(h.now)
    h.run(5)
    (changed,) = h.take(A, rc.ServerKeyChanged)
    assert changed == rc.ServerKeyChanged(old, h.registry.static_public)
    assert not h.take(A, rc.ListReceived)  # nothing from the other key is believed
    assert a.server_key == old


def test_a_full_network_is_a_clear_refusal() -> None:
    h = Harness()
    h.registry = Registry(h.store, rng=random.Random(3).randbytes, max_members=1)
    a, b = h.add(A, ("ssh-home",)), h.add(B, ("laptop",))
    h.start(a)
    h.start(b)
    (refused,) = h.take(B, rc.RegistrationRefused)
    assert isinstance(refused, rc.RegistrationRefused)
    assert "already has 1 nodes" in refused.reason and "max_members" in refused.reason
    assert a.registered and not b.registered
