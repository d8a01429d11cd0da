"""Port prediction schedule: rate, duration, port range, and the odds it promises."""

from __future__ import annotations

import random

from tunnel.path.prediction import DURATION, PORTS, PROBE_RATE, REFRESH, SOCKETS, Opener, Prober


def test_prober_keeps_its_rate_and_stops_after_the_duration() -> None:
    rng = random.Random(1)
    prober = Prober("198.51.100.7", started=10.0, rng=rng.randbytes)
    sent = []
    now = 10.0
    while (deadline := prober.get_timer()) is not None:
        now = max(now, deadline)
        sent.extend(prober.due(now))
        now += 0.001
    assert abs(len(sent) - PROBE_RATE * DURATION) <= 2
    assert all(ip == "198.51.100.7" and PORTS[0] <= port <= PORTS[1] for ip, port in sent)
    assert len({port for _, port in sent}) > 0.95 * len(sent)  # spread over the range


def test_a_late_timer_does_not_flood() -> None:
    prober = Prober("198.51.100.7", started=0.0, rng=random.Random(2).randbytes)
    assert len(prober.due(10.0)) == 20  # ten seconds late: a bounded burst, not 500 pings


def test_the_odds_hyperdht_promises() -> None:
    """Simulate the NAT: SOCKETS random open ports; the prober must hit one almost always."""
    hits = 0
    for trial in range(200):
        rng = random.Random(trial)
        open_ports = {rng.randint(*PORTS) for _ in range(SOCKETS)}
        prober = Prober("x", started=0.0, rng=rng.randbytes)
        now = 0.0
        while (deadline := prober.get_timer()) is not None:
            now = max(now, deadline)
            if any(port in open_ports for _, port in prober.due(now)):
                hits += 1
                break
            now += 0.001
    assert hits >= 196  # 99.9 % expected; 98 % leaves room for the seed


def test_opener_refreshes_then_expires() -> None:
    opener = Opener(started=0.0)
    assert opener.send_due(0.0) and not opener.send_due(1.0)
    assert opener.send_due(REFRESH)
    assert not opener.expired(DURATION) and opener.expired(DURATION + REFRESH + 0.1)
    assert not opener.send_due(DURATION + REFRESH + 1)
