"""Sliding anti-replay window for transport counters (RFC 6479; wireguard-go `replay/replay.go`).

A ring of 128 64-bit blocks. The newest counter seen sets the window's top; a counter is accepted
once, if it is newer than the top or inside the window below it and not yet seen. Moving the top
forward clears whole blocks, so a jump costs at most one pass over the ring.

The window is `(RING_BLOCKS - 1) * 64 = 8128` counters: one block is always being overwritten.
Call `accept` only for packets that already passed authentication, or a forger could move the top.
"""

from __future__ import annotations

from typing import Final

from tunnel.session.constants import REJECT_AFTER_MESSAGES

_BLOCK_BITS_LOG: Final = 6
_BLOCK_BITS: Final = 1 << _BLOCK_BITS_LOG  # 64 bits in a block
_RING_BLOCKS: Final = 1 << 7  # 128 blocks; a power of two so the ring index is a mask
_BLOCK_MASK: Final = _RING_BLOCKS - 1
_BIT_MASK: Final = _BLOCK_BITS - 1
WINDOW_SIZE: Final = (_RING_BLOCKS - 1) * _BLOCK_BITS  # = 8128 counters
_EMPTY_RING: Final = [0] * _RING_BLOCKS
_MAX_COUNTER: Final = 2**64 - 1  # counters are u64 on the wire; the C twin cannot hold more


class ReplayWindow:
    """Which counters of one receiving key have been seen."""

    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self._last = 0
        self._ring = list(_EMPTY_RING)

    def accept(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """Record `counter`; False if it is a replay, too old, or at/over `limit` (or not a u64).

        The C twin (`_datapath.c`) has the same semantics; tests/session/test_replay.py runs both.
        """
        if counter >= limit or counter < 0 or counter > _MAX_COUNTER:
            return False
        ring = self._ring
        last = self._last
        if counter > last:
            block = counter >> _BLOCK_BITS_LOG
            current = last >> _BLOCK_BITS_LOG
            if block != current:  # most packets stay in the top block: nothing to clear
                if block - current >= _RING_BLOCKS:
                    ring[:] = _EMPTY_RING
                else:
                    for i in range(current + 1, block + 1):
                        ring[i & _BLOCK_MASK] = 0
            self._last = counter
        elif last - counter > WINDOW_SIZE:
            return False
        index = (counter >> _BLOCK_BITS_LOG) & _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[index]
        if old & bit:
            return False
        ring[index] = old | bit
        return True

    def state(self) -> tuple[int, tuple[int, ...]]:
        """(top, ring): everything the window holds (for tests)."""
        return self._last, tuple(self._ring)
