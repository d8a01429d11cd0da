"""Datagram size discovery: largest answered probe wins; path changes start over."""

from __future__ import annotations

from tunnel.path.pmtu import BASE_SIZE, PROBE_SIZES, PROBE_TIMEOUT, PathMtu


def test_starts_at_base_and_probes_largest_first() -> None:
    mtu = PathMtu()
    assert mtu.size == BASE_SIZE and mtu.probe_due(0.0) is None  # nothing before a path
    mtu.restart(0.0)
    assert mtu.probe_due(0.0) == PROBE_SIZES[0]
    assert mtu.probe_due(0.1) is None  # one probe at a time
    assert mtu.get_timer() == PROBE_TIMEOUT
    assert mtu.probe_due(PROBE_TIMEOUT) == PROBE_SIZES[1]  # the largest was not answered
    assert mtu.on_probe_answered(PROBE_SIZES[1]) is True
    assert mtu.size == PROBE_SIZES[1]
    assert mtu.probe_due(10.0) is None and mtu.get_timer() is None


def test_nothing_answered_keeps_the_base_size() -> None:
    mtu = PathMtu()
    mtu.restart(0.0)
    now, sent = 0.0, []
    for _ in range(10):
        size = mtu.probe_due(now)
        if size is not None:
            sent.append(size)
        now += PROBE_TIMEOUT
    assert sent == list(PROBE_SIZES) and mtu.size == BASE_SIZE


def test_late_or_smaller_answers_do_not_shrink() -> None:
    mtu = PathMtu()
    mtu.restart(0.0)
    mtu.probe_due(0.0)
    assert mtu.on_probe_answered(PROBE_SIZES[0]) is True
    assert mtu.on_probe_answered(PROBE_SIZES[2]) is False
    assert mtu.size == PROBE_SIZES[0]
    mtu.restart(5.0)  # a new path proves nothing yet
    assert mtu.size == BASE_SIZE
    mtu.stop()
    assert mtu.probe_due(100.0) is None and mtu.size == BASE_SIZE
