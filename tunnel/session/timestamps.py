"""The newest accepted initiation timestamp of each peer: handshake replay protection (sans-IO).

WireGuard whitepaper section 5.1: a responder accepts an initiation only if its TAI64N
timestamp is newer than the last one it accepted from that static key, so a captured initiation
replayed later is refused (it would otherwise move the session's endpoint to the replayer's
address and replace the keys awaiting confirmation). The timestamps are 12-byte TAI64N values,
compared as bytes: big-endian seconds, then nanoseconds.

Bounded so that no member can push a victim's entry out (issue 12, finding 11). The old store
forgot the least recently used of 65,536 entries, and every fresh static key (a member can mint
any number: the network psk is shared) took one, so 65,536 initiations flushed it. Now:

- a peer that has a session keeps its entry for as long as the session lives, whatever else
  arrives; sessions are capped (`MAX_SESSIONS`) and only idle ones are reaped;
- only entries of peers without a session are ever forgotten, oldest first, beyond
  `capacity` entries in all. Minting keys to churn them costs a session slot per key and an
  idle reap (`SESSION_IDLE_LIMIT`) per slot.

Across restarts the shell saves the table (`snapshot`) and loads it back (`load`): WireGuard
keeps it in memory only, so a captured initiation replays once after every restart there.
`version` changes with every change, so the shell writes only when something did.

File format (`encode` / `decode`; the shell does the I/O): a magic line, then records.

| offset | size | field                                 |
|--------|------|---------------------------------------|
| 0      | 8    | `MAGIC` = b"ptnts1\\n\\0"              |
| 8+44i  | 32   | the peer's static public key          |
| 40+44i | 12   | its newest accepted TAI64N timestamp  |
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Final

from tunnel.session.wire import KEY_SIZE, TIMESTAMP_SIZE

MAGIC: Final = b"ptnts1\n\0"
RECORD_SIZE: Final = KEY_SIZE + TIMESTAMP_SIZE


class InitiationTimestamps:
    """Peer static key -> newest accepted TAI64N; see the module docstring."""

    __slots__ = ("_capacity", "_table", "version")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # Insertion order is recency: an accepted initiation moves its peer to the end.
        self._table: dict[bytes, bytes] = {}
        self.version = 0

    def is_replay(self, peer: bytes, timestamp: bytes) -> bool:
        """True if `timestamp` is not newer than the last one accepted from `peer`."""
        last = self._table.get(peer)
        return last is not None and timestamp <= last

    def record(self, peer: bytes, timestamp: bytes, live: Container[bytes]) -> None:
        """Remember an accepted initiation; past capacity, forget the oldest peer not in `live`."""
        self._table.pop(peer, None)
        self._table[peer] = timestamp
        self.version += 1
        if len(self._table) > self._capacity:
            for old in self._table:
                if old not in live:
                    del self._table[old]
                    break

    def load(self, table: Mapping[bytes, bytes]) -> None:
        """Merge a saved table (at start): for each peer the newer timestamp counts."""
        for peer, timestamp in table.items():
            if len(peer) != KEY_SIZE or len(timestamp) != TIMESTAMP_SIZE:
                continue
            if len(self._table) >= self._capacity and peer not in self._table:
                break  # a table saved with a larger capacity: keep what fits
            current = self._table.get(peer)
            if current is None or timestamp > current:
                self._table[peer] = timestamp
        self.version += 1

    def snapshot(self) -> dict[bytes, bytes]:
        return dict(self._table)

    def get(self, peer: bytes) -> bytes | None:
        return self._table.get(peer)

    def __len__(self) -> int:
        return len(self._table)


def encode(table: Mapping[bytes, bytes]) -> bytes:
    """The file contents for `table`."""
    return MAGIC + b"".join(peer + ts for peer, ts in table.items())


def decode(data: bytes) -> dict[bytes, bytes] | None:
    """The table in a file's contents; None if it is not such a file (truncated, foreign)."""
    if not data.startswith(MAGIC) or (len(data) - len(MAGIC)) % RECORD_SIZE:
        return None
    table: dict[bytes, bytes] = {}
    for offset in range(len(MAGIC), len(data), RECORD_SIZE):
        table[data[offset : offset + KEY_SIZE]] = data[offset + KEY_SIZE : offset + RECORD_SIZE]
    return table
