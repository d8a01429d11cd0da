"""A node's state on disk under `$PTUNNEL_HOME`: its static key pair and its network secret.

Files (all mode 0600, in a directory of mode 0700):

| file          | content                                                     |
|---------------|-------------------------------------------------------------|
| `node.key`    | X25519 private key (the Noise static key), base64, one line |
| `network.key` | the 256-bit network secret, base64, one line                |
| `known_nodes` | pinned peer keys per name (see `tunnel.keys.pins`)               |

A key file or directory that others can read is refused, as ssh refuses a private key with loose
permissions: a leaked static key or network secret lets an outsider in.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from tunnel.errors import UserError, path_error
from tunnel.keys.netkeys import NETWORK_SECRET_SIZE

NODE_KEY_FILE = "node.key"
NETWORK_KEY_FILE = "network.key"
KEY_SIZE = 32  # bytes, X25519 private and public keys
HOME_FIX = "set PTUNNEL_HOME (or --home) to a directory of your own"


@contextlib.contextmanager
def file_problem(doing: str, fix: str = HOME_FIX) -> Iterator[None]:
    """Turn an OSError inside into one line: `cannot <doing>: <reason>; <fix>`."""
    try:
        yield
    except OSError as exc:
        raise path_error(exc, doing, fix) from None


def default_home() -> Path:
    env = os.environ.get("PTUNNEL_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ptunnel"


@dataclass(frozen=True, slots=True)
class Identity:
    """The node's static X25519 key pair."""

    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> Identity:
        key = X25519PrivateKey.from_private_bytes(private)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private=private, public=public)

    @classmethod
    def generate(cls) -> Identity:
        raw = X25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls.from_private(raw)


def ensure_home(home: Path) -> Path:
    """Create the state directory (mode 0700) or check that an existing one is private."""
    check_home(home)
    with file_problem(f"create the state directory {home}"):
        if not home.exists():
            home.mkdir(mode=0o700, parents=True)
            home.chmod(0o700)  # mkdir's mode is filtered by the umask
    check_private(home, kind="directory")
    return home


def check_home(home: Path) -> None:
    """Refuse a state directory that is a file, or lies under one (PTUNNEL_HOME=/etc/passwd/x),
    before any file in it is looked for: otherwise that reads as "no key there"."""
    with file_problem(f"look at the state directory {home}"):
        blocker = next((part for part in [*reversed(home.parents), home]
                        if part.exists() and not part.is_dir()), None)
    if blocker == home:
        raise UserError(f"{home} is a file, not a directory; {HOME_FIX}")
    if blocker is not None:
        raise UserError(f"cannot use the state directory {home}: {blocker} is a file, not a "
                        f"directory; {HOME_FIX}")


def check_private(path: Path, kind: str) -> None:
    with file_problem(f"check the permissions of {path}"):
        info = path.stat()
    if kind == "directory" and not stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path} is a file, not a directory; {HOME_FIX}")
    if kind == "file" and not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path} is not a regular file; move it out of the way "
                        "(`ptunnel init` or `ptunnel join` writes a new one)")
    loose = info.st_mode & 0o077
    if loose:
        wanted = "700" if kind == "directory" else "600"
        raise UserError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run `chmod {wanted} {path}` and try again"
        )


def write_secret_file(path: Path, data: bytes) -> None:
    """Write `data` as a base64 line, atomically, with mode 0600 from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    with file_problem(f"write {path}"):
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(data) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)


def read_secret_file(path: Path, size: int, what: str) -> bytes:
    check_private(path, kind="file")
    with file_problem(f"read {path}"):
        text = path.read_bytes()
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise UserError(f"{path} is not a valid {what} file; restore it from a backup or remove it")
    return raw


def _exists(path: Path) -> bool:
    with file_problem(f"look for {path}"):
        return path.exists()


def load_identity(home: Path) -> Identity | None:
    check_home(home)
    path = home / NODE_KEY_FILE
    if not _exists(path):
        return None
    ensure_home(home)
    return Identity.from_private(read_secret_file(path, KEY_SIZE, "node key"))


def load_or_create_identity(home: Path) -> tuple[Identity, bool]:
    """Return the node's identity, creating it on first use; the flag says whether it is new."""
    ensure_home(home)
    existing = load_identity(home)
    if existing is not None:
        return existing, False
    identity = Identity.generate()
    write_secret_file(home / NODE_KEY_FILE, identity.private)
    return identity, True


def load_network_secret(home: Path) -> bytes | None:
    check_home(home)
    path = home / NETWORK_KEY_FILE
    if not _exists(path):
        return None
    ensure_home(home)
    return read_secret_file(path, NETWORK_SECRET_SIZE, "network key")


def store_network_secret(home: Path, secret: bytes) -> None:
    ensure_home(home)
    write_secret_file(home / NETWORK_KEY_FILE, secret)
