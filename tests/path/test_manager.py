"""Path choice in virtual time: LAN first, peer-reflexive learning, relay fallback and recovery."""

from __future__ import annotations

from tunnel.path.manager import (
    PUNCH_FAST_PROBES,
    PUNCH_INTERVAL,
    RELAY_FALLBACK_AFTER,
    SILENCE_TIMEOUT,
    Kind,
    PathChanged,
    PathEvent,
    PathManager,
    RepunchNeeded,
)

LAN = ("10.0.0.5", 4000)
OTHER_LAN = ("10.0.0.6", 4000)
PUBLIC = ("203.0.113.7", 4000)
OTHER_PUBLIC = ("198.51.100.9", 5000)


def events(manager: PathManager) -> list[PathEvent]:
    found = []
    while (event := manager.next_event()) is not None:
        found.append(event)
    return found


def test_probes_every_candidate_quickly_while_punching() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [LAN], 0.0)
    assert sorted(manager.probes_due(0.0)) == sorted([LAN, PUBLIC])
    assert manager.probes_due(0.1) == []
    assert manager.get_timer() == PUNCH_INTERVAL
    assert sorted(manager.probes_due(PUNCH_INTERVAL)) == sorted([LAN, PUBLIC])


def test_lan_beats_public_whatever_the_order() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [LAN], 0.0)
    manager.on_probe_answered(PUBLIC, 0.010, 0.05)
    assert manager.path is not None and manager.path.addr == PUBLIC
    manager.on_probe_answered(LAN, 0.030, 0.06)
    assert manager.path is not None and manager.path.addr == LAN and manager.path.kind == Kind.LAN
    changes = [e for e in events(manager) if isinstance(e, PathChanged)]
    assert [c.new.addr for c in changes if c.new] == [PUBLIC, LAN]


def test_peer_reflexive_address_is_learned() -> None:
    """A symmetric NAT maps the peer to a port nobody announced: authenticated packets reveal it."""
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [], 0.0)
    surprise = ("203.0.113.7", 61234)
    manager.on_authenticated(surprise, 0.3)
    assert manager.path is not None and manager.path.addr == surprise
    assert manager.path.kind == Kind.REFLEXIVE
    # The peer proved it is there: the session may handshake with it, at no probe credit.
    credit = manager.credit
    assert manager.may_send_initiation(surprise, 0.4) and manager.credit == credit


def test_relay_after_fallback_time_then_back_to_direct() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [], 0.0)
    now = 0.0
    while now < RELAY_FALLBACK_AFTER - 0.01:
        manager.probes_due(now)
        manager.handle_timer(now)
        assert not manager.use_relay(now)
        now = manager.get_timer()
    now = RELAY_FALLBACK_AFTER
    manager.handle_timer(now)
    assert manager.use_relay(now)
    assert manager.path is not None and manager.path.kind == Kind.RELAY
    # Probing goes on in the background; the first direct answer replaces the relay.
    manager.on_probe_answered(PUBLIC, 0.02, now + 7.0)
    assert manager.path is not None and manager.path.addr == PUBLIC
    assert not manager.use_relay(now + 7.0)
    kinds = [e.new.kind for e in events(manager) if isinstance(e, PathChanged) and e.new]
    assert kinds == [Kind.RELAY, Kind.PUBLIC]


def test_direct_only_never_relays_and_reports_what_was_tried() -> None:
    manager = PathManager(started=0.0, relay_allowed=False)
    manager.introduce(PUBLIC, [LAN], 0.0)
    for step in range(100):
        now = step * 0.1
        manager.probes_due(now)
        manager.handle_timer(now)
    assert manager.path is None and not manager.use_relay(10.0)
    report = manager.report(10.0)
    assert {r.addr for r in report} == {PUBLIC, LAN}
    assert all(r.probes_sent >= PUNCH_FAST_PROBES and not r.working for r in report)


def test_silent_path_triggers_repunch() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [], 0.0)
    manager.on_probe_answered(PUBLIC, 0.02, 0.1)
    events(manager)
    manager.on_sent(1.0)
    manager.on_authenticated(PUBLIC, 1.01)
    manager.on_sent(2.0)  # sent, and from now on nothing comes back (the NAT rebooted)
    assert manager.get_timer() <= 2.0 + SILENCE_TIMEOUT
    manager.handle_timer(2.0 + SILENCE_TIMEOUT - 0.01)
    assert RepunchNeeded() not in events(manager)
    manager.handle_timer(2.0 + SILENCE_TIMEOUT)
    assert RepunchNeeded() in events(manager)
    # Fast probing resumes, and a newly mapped port takes over when it answers.
    assert PUBLIC in manager.probes_due(2.0 + SILENCE_TIMEOUT)
    remapped = ("203.0.113.7", 40001)
    manager.on_authenticated(remapped, 6.0)
    assert manager.path is not None and manager.path.addr == remapped


def test_rtt_hysteresis_between_direct_paths() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [LAN, OTHER_LAN], 0.0)
    manager.on_probe_answered(LAN, 0.050, 0.1)
    manager.on_probe_answered(OTHER_LAN, 0.045, 0.2)
    assert manager.path is not None and manager.path.addr == LAN  # 10% better: stay
    for t in (0.4, 0.6, 0.8, 1.0):
        manager.on_probe_answered(OTHER_LAN, 0.010, t)
    assert manager.path is not None and manager.path.addr == OTHER_LAN


def test_an_idle_path_in_use_is_kept_however_quiet() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [], 0.0)
    manager.on_authenticated(PUBLIC, 0.1)
    for now in range(1, 3600, 7):  # an hour with nothing sent and nothing heard
        manager.handle_timer(float(now))
    assert manager.path is not None and manager.path.addr == PUBLIC
    assert not [e for e in events(manager) if isinstance(e, RepunchNeeded)]


def test_the_path_follows_the_peers_data_to_a_new_address() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [], 0.0)
    manager.on_authenticated(PUBLIC, 0.1)
    manager.on_data(PUBLIC, 0.2)
    # The peer restarted on another port: its data now comes from there.
    manager.on_authenticated(OTHER_PUBLIC, 5.0)
    manager.on_data(OTHER_PUBLIC, 5.0)
    assert manager.path is not None and manager.path.addr == OTHER_PUBLIC


def test_data_from_another_address_does_not_move_a_path_that_is_still_heard() -> None:
    manager = PathManager(started=0.0)
    manager.introduce(PUBLIC, [], 0.0)
    manager.on_authenticated(PUBLIC, 4.9)
    manager.on_authenticated(OTHER_PUBLIC, 5.0)
    manager.on_data(OTHER_PUBLIC, 5.0)
    assert manager.path is not None and manager.path.addr == PUBLIC
