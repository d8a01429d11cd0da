"""The initiation replay table on disk, so a captured handshake initiation cannot be replayed
after a restart either (issue 12, finding 11).

The session layer refuses an initiation whose TAI64N timestamp is not newer than the last one
it accepted from that key (`tunnel.session.timestamps`). In memory only, as in WireGuard, a
restart forgets them, and an initiation recorded on the wire before the restart is accepted once
more: the node answers it and moves that peer's endpoint to whoever replayed it. So the node
keeps the table in `$PTUNNEL_HOME/initiations` (mode 0600; 44 bytes a peer, at most
`MAX_INITIATION_TIMESTAMPS` peers), loads it at start and writes it when it changed, at most
every SAVE_INTERVAL, and at a clean stop. After a crash, the initiations accepted in the last
SAVE_INTERVAL before it can be replayed once; nothing else can.

The write replaces the file atomically (a temporary file, then `os.replace`), so a crash while
writing leaves the old table, never a torn one. A file that cannot be read or parsed is reported
once and ignored: replay protection then starts from nothing, as WireGuard's always does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

from tunnel.session import timestamps
from tunnel.session.device import Device

log = logging.getLogger(__name__)

REPLAY_FILE: Final = "initiations"
# s; the table changes with every accepted initiation (a rekey every 2 minutes per peer, more
# under a flood of fresh keys): write at most this often, so disk writes stay rare.
SAVE_INTERVAL: Final = 10.0


class ReplayFile:
    """Loads the device's replay table at start and saves it when it changed."""

    def __init__(self, home: Path) -> None:
        self.path = home / REPLAY_FILE
        self._saved_version: int | None = None
        self._next_save = float("-inf")

    def load_into(self, device: Device) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            log.warning("cannot read %s (%s); handshake replay protection starts empty",
                        self.path, exc.strerror or exc)
            data = None
        if data is not None:
            table = timestamps.decode(data)
            if table is None:
                log.warning("%s is not an initiation table; ignoring it", self.path)
            else:
                device.load_replay_table(table)
                log.debug("loaded %d initiation timestamps from %s", len(table), self.path)
        self._saved_version = device.replay_table_version

    def get_timer(self, device: Device) -> float | None:
        """When the next save is due, or None while nothing changed."""
        if device.replay_table_version == self._saved_version:
            return None
        return self._next_save

    def save(self, device: Device, now: float, force: bool = False) -> None:
        """Write the table if it changed and SAVE_INTERVAL has passed (or `force`)."""
        version = device.replay_table_version
        if version == self._saved_version or (not force and now < self._next_save):
            return
        self._saved_version, self._next_save = version, now + SAVE_INTERVAL
        data = timestamps.encode(device.replay_table())
        temporary = self.path.with_name(f".{REPLAY_FILE}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # a leftover temporary file may have had another mode
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("cannot save the initiation table to %s: %s", self.path,
                        exc.strerror or exc)
