"""A token-bucket pacer: spreads a congestion window over the RTT so bursts do not overflow a home
router's small queue (RFC 9002 §7.7). The bucket holds about `PACING_BURST_TIME` of sending, at
least 2 and at most PACING_MAX_BURST_PACKETS packets, because the shell's timer resolution (1 ms
on uvloop) makes finer pacing pointless and larger bursts are what tail-drop queues punish. For
the same reason a packet that must wait is due once `PACING_WAKE_TIME` of sending has built up,
not its own bytes: the shell wakes then and sends that much at once (one GSO send or a few).
"""

from __future__ import annotations

from tunnel.channel.constants import (
    PACING_BURST_TIME,
    PACING_MAX_BURST_PACKETS,
    PACING_MIN_BURST_PACKETS,
    PACING_WAKE_TIME,
)


class Pacer:
    __slots__ = ("_last", "_mss", "_tokens")

    def __init__(self, max_datagram_size: int) -> None:
        self._mss = max_datagram_size
        self._tokens = float(PACING_MAX_BURST_PACKETS * max_datagram_size)  # bytes
        self._last = 0.0  # seconds

    def set_mss(self, mss: int) -> None:
        self._mss = mss

    def _capacity(self, rate: float) -> float:
        burst = rate * PACING_BURST_TIME
        low = PACING_MIN_BURST_PACKETS * self._mss
        high = PACING_MAX_BURST_PACKETS * self._mss
        return min(max(burst, low), high)

    def send_time(self, now: float, rate: float | None, size: int | None = None) -> float:
        """When to send a packet of at most `size` bytes (default: a full-sized one): `now` if
        it may leave at once. The bucket must hold the packet's bytes, so it never goes below
        empty; the caller passes the largest packet it may build. Otherwise the time the bucket
        holds PACING_WAKE_TIME of sending (at most half of it, at least the packet's bytes)."""
        if rate is None or rate <= 0:
            return now
        tokens = self._tokens + (now - self._last) * rate
        capacity = self._capacity(rate)
        if tokens > capacity:
            tokens = capacity
        self._tokens = tokens
        self._last = now
        need = self._mss if size is None else min(size, self._mss)
        if tokens >= need:
            return now
        wake = min(rate * PACING_WAKE_TIME, capacity / 2)
        return now + ((need if need > wake else wake) - tokens) / rate

    def on_packet_sent(self, size: int) -> None:
        self._tokens -= size
