"""The candidate policy against aiming (issue 12): which announced addresses a node may probe,
and the node-wide probe budget."""

from __future__ import annotations

import logging

import pytest

from tunnel.addresses import Addr
from tunnel.path.candidates import MAX_CANDIDATES, CandidatePolicy
from tunnel.path.manager import PROBES_PER_INTRODUCTION, Kind, PathManager
from tunnel.path.probebudget import ProbeBudget

PUBLIC: Addr = ("203.0.113.7", 4000)


@pytest.mark.parametrize("host", [
    "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.10",  # RFC 1918
    "169.254.7.7", "fe80::1",  # link-local
    "100.64.0.1", "100.127.255.254",  # RFC 6598 shared address space
    "fd12:3456::1", "fc00::1",  # ULA
])
def test_lan_candidates_from_private_link_local_cgnat_and_ula_ranges_are_kept(host: str) -> None:
    assert CandidatePolicy().lan_allowed((host, 4000))


@pytest.mark.parametrize("host", [
    "8.8.8.8", "203.0.113.9", "172.32.0.1", "100.128.0.1", "2001:db8::1",  # someone else's
    "127.0.0.1", "::1", "::ffff:127.0.0.1",  # this very host
    "0.0.0.0", "255.255.255.255", "224.0.0.1", "ff02::1",  # nobody, everybody
    "not-an-ip", "",
])
def test_lan_candidates_elsewhere_are_dropped(host: str) -> None:
    assert not CandidatePolicy().lan_allowed((host, 4000))


def test_a_lan_candidate_needs_a_real_port() -> None:
    assert not CandidatePolicy().lan_allowed(("10.0.0.2", 0))
    assert not CandidatePolicy().lan_allowed(("10.0.0.2", 70000))


def test_loopback_only_when_the_rendezvous_is_on_loopback() -> None:
    """The test suite and `make demo` run every node on 127.0.0.1: there, loopback is the LAN."""
    local = CandidatePolicy.for_rendezvous(("127.0.0.1", 7000))
    assert local.lan_allowed(("127.0.0.1", 4000)) and local.public_allowed(("127.0.0.1", 4000))
    remote = CandidatePolicy.for_rendezvous(("198.51.100.1", 7000))
    assert not remote.lan_allowed(("127.0.0.1", 4000))
    assert not remote.public_allowed(("127.0.0.1", 4000))


@pytest.mark.parametrize("addr,allowed", [
    (("203.0.113.7", 4000), True), (("10.0.0.1", 4000), True), (("2001:db8::7", 4000), True),
    (("0.0.0.0", 4000), False), (("224.1.1.1", 4000), False), (("255.255.255.255", 4000), False),
    (("240.0.0.1", 4000), False), (("203.0.113.7", 0), False), (("::", 4000), False),
])
def test_the_public_endpoint_must_be_a_unicast_address(addr: Addr, allowed: bool) -> None:
    assert CandidatePolicy().public_allowed(addr) is allowed


def test_an_introduction_keeps_at_most_eight_candidates_public_first() -> None:
    lan = [(f"10.0.0.{i}", 4000) for i in range(1, 20)]
    public, kept = CandidatePolicy().introduced(PUBLIC, lan)
    assert public == PUBLIC and kept == lan[: MAX_CANDIDATES - 1]
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, lan, 0.0)
    assert len(manager.candidates) == MAX_CANDIDATES
    assert manager.candidates[PUBLIC].kind == Kind.PUBLIC


def test_dropped_candidates_are_logged_at_debug_once(caplog: pytest.LogCaptureFixture) -> None:
    policy = CandidatePolicy()
    with caplog.at_level(logging.DEBUG, logger="tunnel.path.candidates"):
        for _ in range(5):
            policy.introduced(PUBLIC, [("8.8.8.8", 53)])
    lines = [r for r in caplog.records if "8.8.8.8:53" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert "('8.8.8.8'" not in lines[0].getMessage()  # HOST:PORT, never a Python repr


def test_a_node_announces_only_what_its_peers_would_accept() -> None:
    policy = CandidatePolicy()
    own = [("192.168.1.5", 4000), ("198.51.100.7", 4000), ("127.0.0.1", 4000)]
    assert policy.announceable(own) == [("192.168.1.5", 4000)]
    many = [(f"10.0.0.{i}", 4000) for i in range(1, 20)]
    assert len(policy.announceable(many)) == MAX_CANDIDATES - 1  # the public endpoint is one


def test_a_new_introduction_replaces_candidates_that_never_answered() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [("10.0.0.1", 4000)], 0.0)
    manager.on_probe_answered(PUBLIC, 0.02, 0.5)
    manager.introduce(PUBLIC, [("10.0.0.2", 4000)], 30.0)
    assert set(manager.candidates) == {PUBLIC, ("10.0.0.2", 4000)}


def test_silence_rearms_punching_but_only_an_introduction_restores_the_credit() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [("10.0.0.1", 4000)], 0.0)
    manager.on_probe_answered(PUBLIC, 0.02, 0.1)
    now = 0.1
    while now < 60.0:  # the LAN candidate never answers: its schedule runs out
        manager.probes_due(now)
        now += 0.05
    spent = PROBES_PER_INTRODUCTION - manager.credit
    assert 0 < spent < PROBES_PER_INTRODUCTION
    for cycle in range(20):  # the peer makes our path go silent again and again
        manager.on_sent(now)
        manager.handle_timer(now + 3.0)
        now += 3.0
        while manager.probes_due(now) or now < 60.0 + 20 * (cycle + 1):
            now += 0.05
        manager.on_authenticated(PUBLIC, now)  # and comes back
    assert manager.credit == 0
    manager.introduce(PUBLIC, [("10.0.0.1", 4000)], now)
    assert manager.credit == PROBES_PER_INTRODUCTION


def test_the_probe_budget_refills_at_its_rate_up_to_its_burst() -> None:
    budget = ProbeBudget(rate=10.0, burst=5.0, tokens=5.0)
    assert sum(budget.take(0.0) for _ in range(10)) == 5
    assert budget.refused == 5
    assert sum(budget.take(0.3) for _ in range(10)) == 3
    assert sum(budget.take(100.0) for _ in range(10)) == 5  # never more than the burst


def test_peers_share_the_nodes_budget() -> None:
    budget = ProbeBudget(rate=1.0, burst=20.0, tokens=20.0)
    managers = [PathManager(started=0.0, budget=budget) for _ in range(10)]
    for i, manager in enumerate(managers):
        manager.introduce(("203.0.113.7", 4000 + i), [("10.0.0.1", 4000 + i)], 0.0)
    sent = sum(len(m.probes_due(0.0)) for m in managers)
    assert sent == 20 and budget.refused == 0
    assert sum(len(m.probes_due(0.2)) for m in managers) == 0  # 10 peers x 2: nothing left


def test_a_lan_candidate_that_is_the_public_endpoint_counts_once_as_lan() -> None:
    """A rendezvous on the same LAN or host sees the peer at its LAN address."""
    policy = CandidatePolicy.for_rendezvous(("127.0.0.1", 7000))
    manager = PathManager(started=0.0, policy=policy)
    same: Addr = ("127.0.0.1", 4000)
    lan = [same] + [(f"10.0.0.{i}", 4000) for i in range(1, 20)]
    manager.introduce(same, lan, 0.0)
    assert len(manager.candidates) == MAX_CANDIDATES
    assert manager.candidates[same].kind == Kind.LAN
