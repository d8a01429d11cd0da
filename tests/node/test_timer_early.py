"""A timer that runs early does not spin on a stale lower bound (`TimerHeap` entries are lower
bounds of a peer's deadline; uvloop may run a timer up to `TIMER_EARLY` before its time, and
sooner than half a millisecond becomes `call_soon`).

Before the fix the node popped only entries due by the clock: a timer run 0.5 ms early found
nothing, re-armed for the same entry and went round the loop until the clock passed it. In
ping-pong both nodes together made 4.6-4.8 `epoll_pwait` per round trip, against 4.1 after it
(the minimum is 4).
"""

from __future__ import annotations

import asyncio

from tests.support.socketless_node import linked, socketless_node
from tunnel.node.udp import TIMER_EARLY, monotonic

SECRET = bytes(range(32))


def test_an_early_timer_asks_the_peer_for_its_real_deadline() -> None:
    async def scenario() -> None:
        node = socketless_node(SECRET)
        _other, peer, _sent = linked(node, monotonic())
        real = peer.get_timer()
        now = monotonic()
        assert real is not None and real > now + 10 * TIMER_EARLY  # nothing of the peer is near
        stale = now + TIMER_EARLY / 2  # e.g. a PTO that the packets since have pushed later
        node._peer_timers.schedule(peer.static, stale)
        node._arm_timer()
        assert node._timer._deadline == stale
        node._on_timer()  # the timer runs half a millisecond early
        rescheduled, armed = node._peer_timers.earliest(), node._timer._deadline
        assert rescheduled is not None and rescheduled > stale + TIMER_EARLY
        assert armed is not None and armed > stale + TIMER_EARLY  # no call_soon round
        node._timer.cancel()

    asyncio.run(scenario())

