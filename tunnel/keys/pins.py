"""Pinned keys, like ssh's known_hosts: peers per name in `$PTUNNEL_HOME/known_nodes`, rendezvous
servers per address in `$PTUNNEL_HOME/known_rendezvous`.

The first connection to a name records the key the rendezvous introduced; later connections must
see the same key. A changed key is refused with both fingerprints, unless the user accepts it
(`--accept-new-key`), which replaces the pin. The rendezvous can then not swap a node's key
without the user noticing.

File format, one pin a line, `#` comments and blank lines ignored::

    # name  base64 X25519 public key                          [first seen, UTC]
    ssh-home  q83vEjRWeJq8zN7wEjRWeJq8zN7wEjRWeJq8zN7wEjQ=  2026-12-02T01:20Z

(The third field is written since `ptunnel pins list` shows it; older lines have none.)

A rendezvous server's key is pinned the same way under its `HOST:PORT` as configured (a join
code's key, or the key its first COOKIE carried). A changed server key is refused with both
fingerprints (`ServerKeyMismatch`); a new join code or deleting the line accepts it.
`joined_rendezvous` lists the rendezvous addresses of the join code, the first being the one a
node uses when no `--rendezvous`, `PTUNNEL_RENDEZVOUS` or `rendezvous:` names one.

Lines that do not parse are kept as they are (and logged once), never silently dropped. Writes
are atomic (temporary file + rename) with mode 0600. This module does file I/O, so it is
not among the sans-IO modules of tests/test_architecture.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from tunnel.errors import UserError, path_error
from tunnel.keys.identity import file_problem
from tunnel.keys.netkeys import decode_key, encode_key, fingerprint

log = logging.getLogger(__name__)

KNOWN_NODES_FILE = "known_nodes"
KNOWN_RENDEZVOUS_FILE = "known_rendezvous"
JOINED_RENDEZVOUS_FILE = "joined_rendezvous"
FILE_FIX = "fix its permissions, or move it out of the way (it holds the keys pinned so far)"


class PinMismatch(UserError):
    """The key offered for a name differs from the pinned one."""

    def __init__(self, name: str, pinned: bytes, offered: bytes, path: Path) -> None:
        self.name = name
        self.pinned = pinned
        self.offered = offered
        super().__init__(
            f"the key of {name!r} has changed: pinned {fingerprint(pinned)}, now offered "
            f"{fingerprint(offered)}. Someone may be impersonating it, or it was reinstalled; "
            f"if you know it was, connect with --accept-new-key (pins are in {path})"
        )


class ServerKeyMismatch(UserError):
    """The rendezvous at an address presents another key than the one pinned for it."""

    def __init__(self, server: str, pinned: bytes, offered: bytes, path: Path) -> None:
        self.server, self.pinned, self.offered = server, pinned, offered
        super().__init__(
            f"the rendezvous at {server} presents the key {fingerprint(offered)}, but "
            f"{fingerprint(pinned)} is pinned for it: someone on the way may be impersonating "
            f"it. If its operator replaced the key (`ptunnel rendezvous --show-key` there), "
            f"join with a new code from `ptunnel invite`, or delete its line in {path}"
        )


class PinResult(Enum):
    NEW = "new"  # first connection: key recorded
    MATCH = "match"  # same key as pinned
    REPLACED = "replaced"  # key changed and the user accepted the new one


@dataclass(frozen=True, slots=True)
class _Line:
    text: str  # the line as in the file (without newline)
    name: str | None = None  # None for comments, blanks and unparseable lines
    key: bytes = b""
    seen: str = ""  # when the key was pinned (`2026-12-02T01:20Z`); "" on older lines


def _parse_line(text: str) -> _Line:
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return _Line(text)
    fields = stripped.split()
    if len(fields) not in (2, 3):
        return _Line(text)
    try:
        return _Line(text, fields[0], decode_key(fields[1]), fields[2] if fields[2:] else "")
    except ValueError:
        return _Line(text)


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or name.startswith("#"):
        raise UserError(f"{name!r} cannot be a node name: no spaces, not empty, no leading '#'")


class PinStore:
    """The known_nodes file of one state directory."""

    def __init__(self, home: Path, filename: str = KNOWN_NODES_FILE) -> None:
        self.path = Path(home) / filename

    def _read(self) -> list[_Line]:
        try:
            # Bytes that are not UTF-8 survive a rewrite unchanged, as any junk line does.
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise path_error(exc, f"read the pinned keys in {self.path}", FILE_FIX) from None
        lines = [_parse_line(line) for line in text.splitlines()]
        for number, line in enumerate(lines, 1):
            stripped = line.text.strip()
            if line.name is None and stripped and not stripped.startswith("#"):
                log.warning(
                    "%s:%d: not 'name base64-key'; line kept, ignored", self.path, number
                )
        return lines

    def _write(self, lines: list[_Line]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with file_problem(f"write the pinned keys to {self.path}", FILE_FIX):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, "".join(line.text + "\n" for line in lines).encode(
                    "utf-8", errors="surrogateescape"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)

    def entries(self) -> dict[str, bytes]:
        """All pins, name -> key (a name pinned twice: the first line wins)."""
        out: dict[str, bytes] = {}
        for line in self._read():
            if line.name is not None:
                out.setdefault(line.name, line.key)
        return out

    def get(self, name: str) -> bytes | None:
        return self.entries().get(name)

    def pin(self, name: str, key: bytes) -> None:
        """Record `key` for `name`, replacing any pin it had (a join code's word is final)."""
        _check_name(name)
        lines = self._read()
        new_line = _Line(f"{name} {encode_key(key)}", name, key)
        if any(line.name == name for line in lines):
            lines = [new_line if line.name == name else line for line in lines]
        else:
            lines.append(new_line)
        self._write(lines)

    def check(self, name: str, key: bytes, accept_new_key: bool = False) -> PinResult:
        """Compare `key` with the pin of `name`; record it on first use.

        Raises `PinMismatch` (naming both fingerprints) if the pin differs, unless
        `accept_new_key`, which replaces the pin.
        """
        _check_name(name)
        lines = self._read()
        pinned = next((line.key for line in lines if line.name == name), None)
        if pinned == key:
            return PinResult.MATCH
        seen = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
        new_line = _Line(f"{name} {encode_key(key)} {seen}", name, key, seen)
        if pinned is None:
            self._write([*lines, new_line])
            log.info("pinned the key of %r: %s", name, fingerprint(key))
            return PinResult.NEW
        if not accept_new_key:
            raise PinMismatch(name, pinned, key, self.path)
        self._write([new_line if line.name == name else line for line in lines])
        log.warning(
            "replaced the key of %r: %s -> %s", name, fingerprint(pinned), fingerprint(key)
        )
        return PinResult.REPLACED

    def pins(self) -> list[tuple[str, bytes, str]]:
        """(name, key, first seen or "") of every pin, in file order (`ptunnel pins list`)."""
        names: set[str] = set()
        found = []
        for line in self._read():
            if line.name is not None and line.name not in names:  # the first line wins
                names.add(line.name)
                found.append((line.name, line.key, line.seen))
        return found

    def remove(self, name: str) -> bool:
        """Forget the pin of `name`; False if there was none."""
        lines = self._read()
        kept = [line for line in lines if line.name != name]
        if len(kept) == len(lines):
            return False
        self._write(kept)
        return True


class ServerPins:
    """`known_rendezvous`: the key of each rendezvous server, by `HOST:PORT` as configured."""

    def __init__(self, home: Path) -> None:
        self.store = PinStore(home, KNOWN_RENDEZVOUS_FILE)
        self.path = self.store.path

    def get(self, server: str) -> bytes | None:
        return self.store.get(server)

    def pin(self, server: str, key: bytes) -> None:
        self.store.pin(server, key)

    def check(self, server: str, key: bytes) -> None:
        """Pin `key` on first use; raise `ServerKeyMismatch` if another key is pinned."""
        pinned = self.store.get(server)
        if pinned is None:
            self.store.pin(server, key)
            log.info("pinned the key of the rendezvous at %s: %s", server, fingerprint(key))
        elif pinned != key:
            raise ServerKeyMismatch(server, pinned, key, self.path)


def joined_rendezvous(home: Path) -> list[str]:
    """The rendezvous addresses (`HOST:PORT`) the join code named, first one first."""
    path = Path(home) / JOINED_RENDEZVOUS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise path_error(exc, f"read {path}", FILE_FIX) from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def store_joined_rendezvous(home: Path, servers: list[str]) -> None:
    """Remember the join code's rendezvous addresses (atomically, mode 0600)."""
    path = Path(home) / JOINED_RENDEZVOUS_FILE
    tmp = path.with_name(path.name + ".tmp")
    with file_problem(f"write {path}", FILE_FIX):
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, "".join(server + "\n" for server in servers).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
