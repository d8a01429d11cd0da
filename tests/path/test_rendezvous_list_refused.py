"""A LIST the server refuses (a network it does not serve) is reported as `ListRefused`, with the
network id and what to ask the operator, instead of being dropped and read as silence."""

from __future__ import annotations

from rendezvous.admission import parse_networks
from rendezvous.registry import Registry
from tests.path.test_rendezvous_client import NET, OTHER_NET, A, Harness
from tunnel.keys.netkeys import network_id, short_network_id
from tunnel.path import rendezvous as rc


def test_a_refused_list_is_an_event_with_the_reason() -> None:
    h = Harness()
    h.registry = Registry(h.store, rng=h.rand.randbytes,
                          admission=parse_networks(network_id(OTHER_NET).hex(), "networks"))
    a = h.add(A, ())
    a.request_list(h.now)
    h.run(30)
    (refused,) = h.take(A, rc.ListRefused)
    assert isinstance(refused, rc.ListRefused)
    assert short_network_id(network_id(NET)) in refused.reason and "--networks" in refused.reason
    assert not h.take(A, rc.ServerUnreachable)  # an answer, not silence
    assert a.get_timer() is None  # nothing left to retry
