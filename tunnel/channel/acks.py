"""What the channel received and when to acknowledge it (RFC 9000 §13.2).

`AckState` remembers received packet numbers (the newest `RX_HISTORY_RANGES` ranges; anything
older counts as a duplicate), decides when an ACK is due (at once for every second ack-eliciting
packet or any reordering, else after `MAX_ACK_DELAY`), and encodes ACK frames. Ranges the peer is
known to have seen, because a packet carrying our ACK of them was itself acknowledged, are not
repeated (RFC 9000 §13.2.4), which keeps ACK frames, and their cost per packet, small.
"""

from __future__ import annotations

from tunnel.channel.constants import (
    ACK_ELICITING_THRESHOLD,
    MAX_ACK_DELAY,
    MAX_ACK_RANGES,
    RX_HISTORY_RANGES,
)
from tunnel.channel.rangeset import RangeSet

from . import frames as fr


class AckState:
    __slots__ = (
        "_eliciting_unacked",
        "_floor",
        "_largest_time",
        "_received",
        "_seen_by_peer",
        "deadline",
        "pending",
    )

    def __init__(self) -> None:
        self._received = RangeSet()  # packet numbers, the most recent RX_HISTORY_RANGES ranges
        self._floor = 0  # packet numbers below this count as duplicates
        self._largest_time = 0.0  # when the largest packet number arrived
        self._eliciting_unacked = 0
        self._seen_by_peer = 0  # the peer has our ACKs of everything below: never repeat them
        self.pending = False  # an ack-eliciting packet arrived since our last ACK
        self.deadline: float | None = None  # when the pending ACK must leave

    def is_duplicate(self, packet_number: int) -> bool:
        return packet_number < self._floor or self._received.contains(packet_number)

    def on_packet_received(self, packet_number: int, now: float) -> bool:
        """Record a new packet number; return True when it arrived in order."""
        received = self._received
        last = received.last()
        in_order = last is None or packet_number == last[1]
        if last is None or packet_number >= last[1]:
            self._largest_time = now
        received.add(packet_number, packet_number + 1)
        if len(received) > RX_HISTORY_RANGES:
            received.drop_oldest(RX_HISTORY_RANGES)
            first = received.first()
            self._floor = first[0] if first else 0
        return in_order

    def on_ack_eliciting(self, in_order: bool, now: float) -> None:
        self.pending = True
        self._eliciting_unacked += 1
        if not in_order or self._eliciting_unacked >= ACK_ELICITING_THRESHOLD:
            self.deadline = now
        elif self.deadline is None:
            self.deadline = now + MAX_ACK_DELAY

    def due(self, now: float) -> bool:
        return self.pending and self.deadline is not None and self.deadline <= now

    def on_ack_acknowledged(self, largest: int) -> None:
        """A packet carrying our ACK up to `largest` arrived: stop repeating those ranges."""
        if largest + 1 > self._seen_by_peer:
            self._seen_by_peer = largest + 1

    def encode(self, now: float) -> tuple[bytes, int, int]:
        """The ACK frame, its largest packet number and its number of ranges; clears the pending
        ACK. The highest range is always sent, older ones while the peer may not have seen them."""
        ranges: list[tuple[int, int]] = []
        floor = self._seen_by_peer
        received = self._received
        for index in range(len(received) - 1, -1, -1):
            start, end = received.range_at(index)
            if ranges and end <= floor:
                break
            ranges.append((max(start, floor) if ranges else start, end - 1))
            if len(ranges) == MAX_ACK_RANGES:
                break
        delay_us = max(0, int((now - self._largest_time) * 1e6))
        self.pending = False
        self._eliciting_unacked = 0
        self.deadline = None
        return fr.encode_ack(ranges, delay_us), ranges[0][1], len(ranges)
