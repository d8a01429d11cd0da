"""Rendezvous state behind a small synchronous interface: `Store`, and its SQLite implementation.

Backends: `SQLiteStore` here (one host, the default) and `rendezvous.redisstore.RedisStore`
(several servers on one Redis). Both pass one contract suite (`tests/rendezvous/test_store.py`);
the registry never learns which one it runs on. A backend whose service cannot be reached raises
`StoreUnavailable` from any method, having changed nothing it reports; the registry answers the
request with REFUSED TRY_LATER and the next call tries the service again.

The store, not the process, is the source of truth for everything that must outlive a packet:
members (names, static key, observed endpoint, LAN candidates, registration nonce, expiry), name
ownership, each node's last request counter, the relay grants (who was introduced to whom, one
secret token per direction) and the cookie secret. Several servers sharing one store (SQLite on
one host, Redis across hosts) therefore serve one network, and a restarted server loses no live
registration.

All times are wall-clock seconds (`time.time()` scale), shared by every server. On SQLite each
method is one short transaction; `BEGIN IMMEDIATE` makes check-then-write steps atomic across
processes (on Redis, one Lua script does).

The database holds the cookie secret: it and its `-wal`/`-shm` files are mode 0600. The file is
created 0600 before SQLite opens it (SQLite gives the -wal and -shm files the database's mode),
and files left looser by an older version are tightened at open.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rendezvous.protocol import Endpoint

SCHEMA_VERSION = 1  # bumped on any incompatible change of the tables below
_U64_OFFSET = 1 << 63  # SQLite integers are signed 64-bit; counters are u64


@dataclass(frozen=True, slots=True)
class Member:
    network: bytes
    static: bytes
    names: tuple[str, ...]
    endpoint: Endpoint
    lan: tuple[Endpoint, ...]
    nonce: bytes  # nonce of its latest REGISTER, echoed in pushes to it
    last_seen: float
    expires: float
    # Id of the server it registered at (`Registry.server_id`), where pushes to it must leave
    # from (its NAT lets only that server in). "" on SQLite: one host, every server local.
    server: str = ""


@dataclass(frozen=True, slots=True)
class RelayGrant:
    """A live permission to relay from `src` to `dest`, proven by `token` (`Store.relay_grant`)."""

    network: bytes
    src: bytes
    dest: bytes
    token: bytes
    dest_endpoint: Endpoint  # where `dest` is registered now
    dest_server: str = ""  # the server `dest` registered at (`Member.server`)


@dataclass(frozen=True, slots=True)
class RequestCounter:
    """A request's counter for `Store.register` to check and keep as `bump_counter` does."""

    value: int
    keep_until: float


@dataclass(frozen=True, slots=True)
class Registration:
    """Outcome of `Store.register`: the live record it replaced and the network's live members
    after it (by static key, the new record among them); or the name conflict; or `full`."""

    previous: Member | None = None
    conflict_name: str = ""
    conflict_holder: bytes = b""
    full: bool = False  # a new member, and the network already had `max_members`
    members: tuple[Member, ...] = ()
    stale_counter: int | None = None  # the node's last counter, when the given one is not above


@dataclass(frozen=True, slots=True)
class Introduction:
    """Outcome of `Store.introduction`: the sender's and the name holder's live records."""

    me: Member | None = None
    target: Member | None = None
    stale_counter: int | None = None  # the sender's last counter, when the given one is not above


class StoreUnavailable(Exception):
    """The store's service (Redis) cannot be reached now; the caller may retry later."""


class Store(Protocol):
    def cookie_secret(self, candidate: bytes) -> bytes:
        """The shared cookie secret; stores `candidate` if there is none yet."""
        ...

    def bump_counter(
        self, network: bytes, static: bytes, counter: int, keep_until: float
    ) -> int | None:
        """Accept `counter` if above the last one (None), else return the last one."""
        ...

    def register(self, member: Member, now: float, max_members: int = 0,
                 counter: RequestCounter | None = None) -> Registration:
        """Claim names and upsert the member atomically, unless a live other key holds a name
        or (with `max_members` > 0) it is new to a network that already has that many live
        members; then nothing is written. Returns the live members too (the reply's list and
        the JOINED recipients). With `counter`, first `bump_counter` in the same step, and
        nothing else when it is stale (`stale_counter`). One round trip for a whole REGISTER
        instead of a counter bump, a read before, the write and a read after."""
        ...

    def introduction(self, network: bytes, static: bytes, name: str, counter: RequestCounter,
                     now: float) -> Introduction:
        """`bump_counter`, then (unless stale) `member` of the sender and `member_by_name`, in
        one step: a CONNECT's reads in one round trip."""
        ...

    def remove(self, network: bytes, static: bytes) -> Member | None: ...

    def member(self, network: bytes, static: bytes, now: float) -> Member | None: ...

    def member_by_name(self, network: bytes, name: str, now: float) -> Member | None: ...

    def member_by_endpoint(self, endpoint: Endpoint, now: float) -> Member | None: ...

    def members(self, network: bytes, now: float) -> list[Member]: ...

    def expire(self, now: float) -> list[Member]:
        """Delete and return members whose registration ran out; drop stale counters and the
        relay grants that ran out or lost a side."""
        ...

    def grant_relay(self, network: bytes, src: bytes, dest: bytes, grant_id: bytes,
                    token: bytes, until: float, now: float) -> bytes:
        """Permit relaying from `src` to `dest` until `until`; returns the token in force: the
        live grant's own (its expiry extended), else `token` stored under `grant_id`."""
        ...

    def grant_relay_pair(self, network: bytes, a: bytes, b: bytes, ab: tuple[bytes, bytes],
                         ba: tuple[bytes, bytes], until: float, now: float) -> tuple[bytes, bytes]:
        """`grant_relay` a→b with `ab` = (grant id, token) and b→a with `ba`, in one step;
        returns the two tokens in force."""
        ...

    def relay_grant(self, grant_id: bytes, now: float) -> RelayGrant | None:
        """The live grant of that id while both its members are registered, else None."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    network BLOB NOT NULL, static BLOB NOT NULL, names TEXT NOT NULL,
    host TEXT NOT NULL, port INTEGER NOT NULL, lan TEXT NOT NULL, nonce BLOB NOT NULL,
    last_seen REAL NOT NULL, expires REAL NOT NULL, PRIMARY KEY (network, static));
CREATE INDEX IF NOT EXISTS members_by_endpoint ON members (host, port);
CREATE TABLE IF NOT EXISTS names (
    network BLOB NOT NULL, name TEXT NOT NULL, static BLOB NOT NULL,
    PRIMARY KEY (network, name));
CREATE TABLE IF NOT EXISTS counters (
    network BLOB NOT NULL, static BLOB NOT NULL, counter INTEGER NOT NULL,
    keep_until REAL NOT NULL, PRIMARY KEY (network, static));
DROP TABLE IF EXISTS intros;
CREATE TABLE IF NOT EXISTS relay_grants (
    id BLOB PRIMARY KEY, token BLOB NOT NULL, network BLOB NOT NULL, src BLOB NOT NULL,
    dest BLOB NOT NULL, until REAL NOT NULL, UNIQUE (network, src, dest));
"""

_MEMBER_COLS = "network, static, names, host, port, lan, nonce, last_seen, expires"


# Names cannot contain "," (see `protocol.NAME_RE`); endpoints are stored as "host/port" joined
# by spaces. Plain text, not JSON: member lists are decoded on every refresh.
def _join_names(names: tuple[str, ...]) -> str:
    return ",".join(names)


def _join_endpoints(eps: tuple[Endpoint, ...]) -> str:
    return " ".join(f"{host}/{port}" for host, port in eps)


def _split_endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition("/")
    return host, int(port)


def _row_to_member(row: Any) -> Member:
    network, static, names, host, port, lan, nonce, last_seen, expires = row
    return Member(
        network=bytes(network),
        static=bytes(static),
        names=tuple(names.split(",")) if names else (),
        endpoint=(str(host), int(port)),
        lan=tuple(_split_endpoint(x) for x in lan.split(" ")) if lan else (),
        nonce=bytes(nonce),
        last_seen=float(last_seen),
        expires=float(expires),
    )


def _private_files(path: Path) -> None:
    """Create the database file 0600 if missing, and make it and its -wal/-shm files 0600."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)


class SQLiteStore:
    """`Store` on SQLite. `path=":memory:"` for tests."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            _private_files(Path(path))
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version not in (0, SCHEMA_VERSION):
            raise ValueError(f"{path}: rendezvous database schema {version}, this server "
                             f"understands {SCHEMA_VERSION}; use another --db")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, args: tuple[object, ...]) -> Member | None:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else _row_to_member(row)

    def cookie_secret(self, candidate: bytes) -> bytes:
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('cookie_secret', ?)", (candidate,))
        row = self._db.execute("SELECT value FROM meta WHERE key='cookie_secret'").fetchone()
        return bytes(row[0])

    def bump_counter(
        self, network: bytes, static: bytes, counter: int, keep_until: float
    ) -> int | None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            return self._bump(network, static, counter, keep_until)
        finally:
            db.execute("COMMIT")

    def _bump(self, network: bytes, static: bytes, counter: int, keep_until: float) -> int | None:
        """`bump_counter` inside the caller's transaction."""
        row = self._db.execute(
            "SELECT counter FROM counters WHERE network=? AND static=?", (network, static)
        ).fetchone()
        if row is not None and int(row[0]) + _U64_OFFSET >= counter:
            return int(row[0]) + _U64_OFFSET
        self._db.execute(
            "INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?)",
            (network, static, counter - _U64_OFFSET, keep_until),
        )
        return None

    def register(self, member: Member, now: float, max_members: int = 0,
                 counter: RequestCounter | None = None) -> Registration:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if counter is not None:
                last = self._bump(member.network, member.static, counter.value,
                                  counter.keep_until)
                if last is not None:
                    return Registration(stale_counter=last)
            if max_members > 0 and self.member(member.network, member.static, now) is None:
                (count,) = db.execute("SELECT count(*) FROM members WHERE network=? AND "
                                      "expires>?", (member.network, now)).fetchone()
                if count >= max_members:
                    return Registration(full=True)
            for name in member.names:
                row = db.execute(
                    "SELECT n.static FROM names n JOIN members m"
                    " ON m.network = n.network AND m.static = n.static"
                    " WHERE n.network=? AND n.name=? AND n.static != ? AND m.expires > ?",
                    (member.network, name, member.static, now),
                ).fetchone()
                if row is not None:
                    return Registration(conflict_name=name, conflict_holder=bytes(row[0]))
            previous = self._one(
                f"SELECT {_MEMBER_COLS} FROM members WHERE network=? AND static=? AND expires>?",
                (member.network, member.static, now),
            )
            db.execute("DELETE FROM names WHERE network=? AND static=?",
                       (member.network, member.static))
            db.executemany(
                "INSERT OR REPLACE INTO names VALUES (?, ?, ?)",
                [(member.network, name, member.static) for name in member.names],
            )
            db.execute(
                "INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (member.network, member.static, _join_names(member.names), member.endpoint[0],
                 member.endpoint[1], _join_endpoints(member.lan), member.nonce, member.last_seen,
                 member.expires),
            )
            return Registration(previous=previous,
                                members=tuple(self.members(member.network, now)))
        finally:
            db.execute("COMMIT")

    def introduction(self, network: bytes, static: bytes, name: str, counter: RequestCounter,
                     now: float) -> Introduction:
        last = self.bump_counter(network, static, counter.value, counter.keep_until)
        if last is not None:
            return Introduction(stale_counter=last)
        return Introduction(self.member(network, static, now),
                            self.member_by_name(network, name, now))

    def remove(self, network: bytes, static: bytes) -> Member | None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            old = self._one(f"SELECT {_MEMBER_COLS} FROM members WHERE network=? AND static=?",
                            (network, static))
            db.execute("DELETE FROM members WHERE network=? AND static=?", (network, static))
            db.execute("DELETE FROM names WHERE network=? AND static=?", (network, static))
            db.execute("DELETE FROM relay_grants WHERE network=? AND (src=? OR dest=?)",
                       (network, static, static))
            return old
        finally:
            db.execute("COMMIT")

    def member(self, network: bytes, static: bytes, now: float) -> Member | None:
        return self._one(
            f"SELECT {_MEMBER_COLS} FROM members WHERE network=? AND static=? AND expires>?",
            (network, static, now),
        )

    def member_by_name(self, network: bytes, name: str, now: float) -> Member | None:
        return self._one(
            f"SELECT {', '.join('m.' + c.strip() for c in _MEMBER_COLS.split(','))}"
            " FROM names n JOIN members m ON m.network = n.network AND m.static = n.static"
            " WHERE n.network=? AND n.name=? AND m.expires>?",
            (network, name, now),
        )

    def member_by_endpoint(self, endpoint: Endpoint, now: float) -> Member | None:
        return self._one(
            f"SELECT {_MEMBER_COLS} FROM members WHERE host=? AND port=? AND expires>?"
            " ORDER BY last_seen DESC",
            (endpoint[0], endpoint[1], now),
        )

    def members(self, network: bytes, now: float) -> list[Member]:
        rows = self._db.execute(
            f"SELECT {_MEMBER_COLS} FROM members WHERE network=? AND expires>? ORDER BY static",
            (network, now),
        ).fetchall()
        return [_row_to_member(row) for row in rows]

    def expire(self, now: float) -> list[Member]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            gone = [
                _row_to_member(row)
                for row in db.execute(
                    f"SELECT {_MEMBER_COLS} FROM members WHERE expires<=?", (now,)
                ).fetchall()
            ]
            for m in gone:
                db.execute("DELETE FROM names WHERE network=? AND static=?", (m.network, m.static))
            db.execute("DELETE FROM members WHERE expires<=?", (now,))
            db.execute("DELETE FROM counters WHERE keep_until<=?", (now,))
            # A relay grant ends with its introduction or either side's registration.
            db.execute(
                "DELETE FROM relay_grants WHERE until<=? OR NOT EXISTS (SELECT 1 FROM members m"
                " WHERE m.network=relay_grants.network AND m.static=relay_grants.src) OR NOT"
                " EXISTS (SELECT 1 FROM members m WHERE m.network=relay_grants.network"
                " AND m.static=relay_grants.dest)",
                (now,),
            )
            return gone
        finally:
            db.execute("COMMIT")

    def grant_relay(self, network: bytes, src: bytes, dest: bytes, grant_id: bytes,
                    token: bytes, until: float, now: float) -> bytes:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT token FROM relay_grants WHERE network=? AND src=? AND dest=? AND until>?",
                (network, src, dest, now),
            ).fetchone()
            if row is not None:
                # Keep the token: a node whose INTRODUCED was lost still holds the old one.
                db.execute("UPDATE relay_grants SET until=max(until, ?) WHERE network=? AND"
                           " src=? AND dest=?", (until, network, src, dest))
                return bytes(row[0])
            db.execute("DELETE FROM relay_grants WHERE network=? AND src=? AND dest=?",
                       (network, src, dest))
            db.execute("INSERT INTO relay_grants VALUES (?, ?, ?, ?, ?, ?)",
                       (grant_id, token, network, src, dest, until))
            return token
        finally:
            db.execute("COMMIT")

    def grant_relay_pair(self, network: bytes, a: bytes, b: bytes, ab: tuple[bytes, bytes],
                         ba: tuple[bytes, bytes], until: float, now: float) -> tuple[bytes, bytes]:
        return (self.grant_relay(network, a, b, ab[0], ab[1], until, now),
                self.grant_relay(network, b, a, ba[0], ba[1], until, now))

    def relay_grant(self, grant_id: bytes, now: float) -> RelayGrant | None:
        row = self._db.execute(
            "SELECT g.network, g.src, g.dest, g.token, d.host, d.port FROM relay_grants g"
            " JOIN members d ON d.network=g.network AND d.static=g.dest"
            " JOIN members s ON s.network=g.network AND s.static=g.src"
            " WHERE g.id=? AND g.until>? AND d.expires>? AND s.expires>?",
            (grant_id, now, now, now),
        ).fetchone()
        if row is None:
            return None
        network, src, dest, token, host, port = row
        return RelayGrant(bytes(network), bytes(src), bytes(dest), bytes(token),
                          (str(host), int(port)))
