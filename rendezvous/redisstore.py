"""`Store` on Redis, for several rendezvous servers serving one deployment (`--store redis://...`).

Why a synchronous client. The registry is pure and synchronous (`registry.py`): it calls the
store inline while it handles one datagram. The issue asked for redis-py's asyncio client; the
ways to use it (the registry yielding store calls as effects, or an in-process cache kept in
sync by pub/sub) would turn every handler into a resumable state machine, or answer from a cache
that the name race must never trust. A blocking call on the event-loop thread costs one round
trip. Measured on the 2-CPU development machine (load 3-5) against a local redis-server 7.0 with
its append-only file: 63 µs for a read (HMGET), 144 µs for the register script. A REGISTER,
first or refresh, is one round trip: one script checks and bumps the counter, checks the
network's cap and the names, writes, and returns the member list (the reply's, and the JOINED
recipients'); it was 4 round trips for a refresh and 6 for a first registration, and in the load
test the round trips took about half of the server's time (redis-py packs and parses each; with
hiredis a refresh costs 0.55 ms of server CPU in all). An introduction makes 2 (was 8): one
script checks the counter and reads both records, one grants the relay both ways. In a network
of 200 members a refresh took 5.2 ms p50 on Redis against 2.3 ms on SQLite (most of the
difference is the 200-member list crossing the socket and being decoded), and a first
registration 16 ms on either (sealing a JOINED to each of the 199 others dominates). A Redis on
another host multiplies the round trips (0.2-0.5 ms each on a LAN); that is where making the
store calls effects would pay off. Two bounds keep a sick Redis from stalling the loop: every
socket operation times out after `SOCKET_TIMEOUT`, and after a failure the store raises
`StoreUnavailable` at once for `RETRY_AFTER` (doubling up to `RETRY_AFTER_MAX` while failures go
on) without touching the network (the registry then refuses with TRY_LATER), so a flood of
requests during an outage costs only the refusals.

Reconnection: redis-py's pool drops a broken connection; the next call opens a new one, and one
immediate retry covers the stale pooled connection after a Redis restart. Scripts are cached
by SHA1 and re-sent when a restarted Redis has forgotten them.

Atomicity: every method that checks and then writes is one Lua script (`redislua.py`), which
Redis runs alone. Two servers asking for one name at the same moment therefore meet in one
script each, and the second sees the first's claim (`tests/rendezvous/test_redis_store.py`, the
name race). The scripts compute their key names, so this needs one Redis (with replicas or
Sentinel if wanted), not Redis Cluster.

Layout (prefix `ptn:`; ids in hex; `N` network, `S` static key; every time is the float text
the registry passed, compared with `tonumber`, never re-formatted by Lua):

| key             | type | content                                          | Redis TTL      |
|-----------------|------|--------------------------------------------------|----------------|
| `cookie`        | str  | the shared cookie secret                         | none           |
| `c:N:S`         | hash | `c` counter (20 decimal digits), `keep` until    | keep + GRACE   |
| `cexp`          | zset | counter keys by keep-until (for `expire`)        | none           |
| `m:N:S`         | hash | names, host, port, lan, nonce, last_seen, expires, | expires + GRACE|
|                 |      | server (the id of the server it registered at)   |                |
| `n:N:NAME`      | str  | S, the holder of NAME                            | as its member  |
| `net:N`         | zset | S by expires: the network's members              | longest member |
| `ep:HOST/PORT`  | set  | `N:S` registered from that endpoint              | longest member |
| `exp`           | zset | `N:S` by expires (for `expire`)                  | none           |
| `g:ID`          | hash | relay grant: token, network, src, dest, until    | until + GRACE  |
| `gp:N:SRC:DEST` | str  | ID of the pair's grant                           | as its grant   |
| `mg:N:S`        | set  | IDs of the grants S is a side of                 | longest grant  |
| `gexp`          | zset | IDs by until (for `expire`)                      | none           |

The registry decides liveness by comparing the stored expiry with its `now`, as on SQLite;
Redis' own TTLs (`GRACE` later) only collect what no sweep reached, so the `expire` sweep still
finds an expired member and announces LEFT. Redis must persist every change before it answers
(`appendonly yes`, `appendfsync always`): a Redis that restarts empty forgets who holds which
name, and until each owner's next refresh (20 s) another key could claim it; counters forgotten
too would let a recorded request be replayed within its cookie's life (120 s). With `everysec`
(Redis' default) a crash can lose up to 2 s of changes already answered: Redis postpones its
write while a background fsync runs.

Push routing between servers (JOINED, LEFT, INTRODUCED, relayed packets for a node registered at
another server): `register` stores the id of the server a member registered at (`server`), the
registry marks each `Send` for another server's member with it, and the shell publishes it on
that server's channel, `ptn:push:ID`, where that server listens (`rendezvous.pushbus`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis import exceptions as rexc
from redis.backoff import NoBackoff
from redis.retry import Retry

from rendezvous.protocol import Endpoint
from rendezvous.redislua import (
    AT_ENDPOINT,
    BUMP,
    BY_NAME,
    EXPIRE,
    GRANT,
    GRANT_LOOKUP,
    GRANT_PAIR,
    INTRODUCE,
    MEMBERS,
    REGISTER,
    REMOVE,
)
from rendezvous.store import (
    Introduction,
    Member,
    Registration,
    RelayGrant,
    RequestCounter,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

PREFIX = "ptn:"
GRACE = 300  # seconds Redis keeps a record past its expiry: the sweep (every 5 s) comes first
# A local Redis answers in 0.1 ms, a LAN one in about 1 ms: 100 ms means it is not answering.
# An unreachable host (no RST) then costs two of these (the call and its one retry) per try.
SOCKET_TIMEOUT = 0.1  # seconds
# After a failure the store does not touch the network for RETRY_AFTER, doubled on each failure
# in a row up to RETRY_AFTER_MAX: an unreachable Redis blocks the loop for at most 0.2 s every
# 4 s (5 %), and a Redis that is back is used again within 4 s (a node retries every 16 s at most).
RETRY_AFTER = 0.5  # seconds
RETRY_AFTER_MAX = 4.0  # seconds
DEFAULT_PORT = 6379
# Members (and counters, and grants) one expiry script removes: 9.9 ms of Redis time measured
# for 256 members with a relay grant each, a tenth of SOCKET_TIMEOUT.
EXPIRE_BATCH = 256
_COUNTER_DIGITS = 20  # u64 in decimal; fixed width so Lua compares them as strings
# Errors that mean "Redis cannot serve now" (down, restarting, loading its file, a replica, out
# of disk); anything else is a bug and is raised as it is.
_UNAVAILABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError,
                rexc.MasterDownError, rexc.TryAgainError)
_UNAVAILABLE_REPLIES = ("MISCONF", "LOADING")
_FIELDS = ("names", "host", "port", "lan", "nonce", "last_seen", "expires", "server")

T = TypeVar("T")
ScriptArg = str | int | float | bytes


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """`redis://[:PASSWORD@]HOST[:PORT][/DB]`, checked."""

    url: str
    host: str
    port: int
    db: int

    def describe(self) -> str:
        """The URL without its password, for logs and messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_store_url(text: str) -> StoreUrl:
    """Raises ValueError saying what is wrong with `text`."""
    parts = urlsplit(text)
    if parts.scheme != "redis":
        raise ValueError(f"store {text!r} is not a redis:// URL; use redis://HOST:PORT/DB")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"store {text!r} has a bad port; use redis://HOST:PORT/DB") from None
    if not parts.hostname:
        raise ValueError(f"store {text!r} names no host; use redis://HOST:PORT/DB")
    path = parts.path.strip("/") or "0"
    if not path.isdigit() or parts.query or parts.fragment:
        raise ValueError(f"store {text!r}: the database must be a number, as in "
                         "redis://HOST:PORT/0")
    return StoreUrl(text, parts.hostname, port, int(path))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(now: float) -> str:
    """A float as text that round-trips exactly (`repr`), for Lua's `tonumber` and for us."""
    return repr(float(now))


def _ttl(until: float, now: float) -> int:
    return max(1, math.ceil(until - now)) + GRACE


def _counter_args(counter: int, keep_until: float) -> tuple[str, str, int]:
    """A counter as the scripts take it: fixed-width text, keep-until, and the key's TTL."""
    # No `now` here: the backstop TTL counts from the wall clock the registry's times use.
    return str(counter).zfill(_COUNTER_DIGITS), _number(keep_until), _ttl(keep_until, time.time())


def _member(network: bytes, static: bytes, fields: list[Any]) -> Member:
    names, host, port, lan, nonce, last_seen, expires = fields[:7]
    # A record written before servers were recorded has no `server`: treated as local.
    server = _text(fields[7]) if len(fields) > 7 and fields[7] is not None else ""
    lan_text = _text(lan)
    return Member(
        network=network,
        static=static,
        names=tuple(_text(names).split(",")) if _text(names) else (),
        endpoint=(_text(host), int(port)),
        lan=tuple(_split_endpoint(x) for x in lan_text.split(" ")) if lan_text else (),
        nonce=bytes(nonce),
        last_seen=float(last_seen),
        expires=float(expires),
        server=server,
    )


def _live_member(network: bytes, static: bytes, fields: list[Any],
                 now: float) -> Member | None:
    """The record's member if there is a record (HMGET gives None fields for none) live at
    `now`."""
    if not fields or fields[0] is None or float(_text(fields[6])) <= now:
        return None
    return _member(network, static, fields)


def _split_endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition("/")
    return host, int(port)


def _join_endpoints(eps: tuple[Endpoint, ...]) -> str:
    return " ".join(f"{host}/{port}" for host, port in eps)


class RedisStore:
    """`Store` on one Redis database; see the module docstring for the layout and the trade-offs.
    Several instances (servers) may share one database; `prefix` separates deployments in one."""

    def __init__(self, url: StoreUrl | str, prefix: str = PREFIX,
                 socket_timeout: float = SOCKET_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url if isinstance(url, StoreUrl) else parse_store_url(url)
        self._p = prefix
        self._clock = clock
        self._down_until = 0.0
        self._down = False
        self._failures = 0  # in a row
        self.round_trips = 0
        self._redis = redis.Redis.from_url(
            self.url.url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1), health_check_interval=0)
        self._register = self._redis.register_script(REGISTER)
        self._remove = self._redis.register_script(REMOVE)
        self._expire = self._redis.register_script(EXPIRE)
        self._bump = self._redis.register_script(BUMP)
        self._grant = self._redis.register_script(GRANT)
        self._grant_lookup = self._redis.register_script(GRANT_LOOKUP)
        self._members = self._redis.register_script(MEMBERS)
        self._at_endpoint = self._redis.register_script(AT_ENDPOINT)
        self._by_name = self._redis.register_script(BY_NAME)
        self._introduce = self._redis.register_script(INTRODUCE)
        self._grant_pair = self._redis.register_script(GRANT_PAIR)

    def close(self) -> None:
        self._redis.close()

    def _call(self, what: Callable[[], T]) -> T:
        """Run one Redis round trip; StoreUnavailable while Redis cannot serve."""
        if self._down and self._clock() < self._down_until:
            raise StoreUnavailable(f"{self.url.describe()} is unavailable")
        try:
            result = what()
        except _UNAVAILABLE as exc:
            self._failed(exc)
            raise StoreUnavailable(f"{self.url.describe()}: {exc}") from None
        except rexc.ResponseError as exc:
            if not str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise
            self._failed(exc)
            raise StoreUnavailable(f"{self.url.describe()}: {exc}") from None
        self.round_trips += 1
        self._failures = 0
        if self._down:
            self._down = False
            log.info("store %s is back", self.url.describe())
        return result

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        pause = min(RETRY_AFTER_MAX, RETRY_AFTER * 2 ** min(self._failures - 1, 16))
        self._down_until = self._clock() + pause
        if not self._down:
            self._down = True
            log.warning("store %s is unavailable (%s); refusing requests with TRY_LATER until "
                        "it answers again", self.url.describe(), exc)

    def _key(self, kind: str, network: bytes, static: bytes) -> str:
        return f"{self._p}{kind}:{network.hex()}:{static.hex()}"

    # --- Store -------------------------------------------------------------------------------
    def cookie_secret(self, candidate: bytes) -> bytes:
        key = self._p + "cookie"

        def run() -> Any:
            pipe = self._redis.pipeline(transaction=True)
            pipe.setnx(key, candidate)
            pipe.get(key)
            return pipe.execute()[1]

        return bytes(self._call(run))

    def bump_counter(
        self, network: bytes, static: bytes, counter: int, keep_until: float
    ) -> int | None:
        last = self._call(lambda: self._bump(keys=[self._key("c", network, static)],
                                             args=[self._p, *_counter_args(counter,
                                                                           keep_until)]))
        return None if last is None else int(last)

    def register(self, member: Member, now: float, max_members: int = 0,
                 counter: RequestCounter | None = None) -> Registration:
        args: list[ScriptArg] = [
            self._p, member.network.hex(), member.static.hex(), _number(now),
            _ttl(member.expires, now), ",".join(member.names), member.endpoint[0],
            member.endpoint[1], _join_endpoints(member.lan), member.nonce,
            _number(member.last_seen), _number(member.expires), member.server, max_members,
            *(_counter_args(counter.value, counter.keep_until) if counter else ("", "", 0))]
        result = self._call(lambda: self._register(args=args))
        outcome = _text(result[0])
        if outcome == "stale":
            return Registration(stale_counter=int(result[1]))
        if outcome == "full":
            return Registration(full=True)
        if outcome == "conflict":
            return Registration(conflict_name=_text(result[1]),
                                conflict_holder=bytes.fromhex(_text(result[2])))
        prev = result[1]
        return Registration(previous=_member(member.network, member.static, prev) if prev
                            else None, members=tuple(self._live(member.network, result[2], now)))

    def introduction(self, network: bytes, static: bytes, name: str, counter: RequestCounter,
                     now: float) -> Introduction:
        args: list[ScriptArg] = [self._p, network.hex(), static.hex(), name,
                                 *_counter_args(counter.value, counter.keep_until)]
        result = self._call(lambda: self._introduce(args=args))
        if _text(result[0]) == "stale":
            return Introduction(stale_counter=int(result[1]))
        _, mine, holder, theirs = result
        me = _live_member(network, static, mine, now)
        target = (_live_member(network, bytes.fromhex(_text(holder)), theirs, now) if holder
                  else None)
        return Introduction(me, target if target is not None and name in target.names else None)

    def remove(self, network: bytes, static: bytes) -> Member | None:
        rec = self._call(lambda: self._remove(args=[self._p, network.hex(), static.hex()]))
        return _member(network, static, rec) if rec else None

    def member(self, network: bytes, static: bytes, now: float) -> Member | None:
        rec = self._call(lambda: self._redis.hmget(self._key("m", network, static), _FIELDS))
        return _live_member(network, static, rec, now)

    def member_by_name(self, network: bytes, name: str, now: float) -> Member | None:
        found = self._call(lambda: self._by_name(args=[self._p, network.hex(), name]))
        if not found:
            return None
        holder, rec = found
        m = _live_member(network, bytes.fromhex(_text(holder)), rec, now)
        return m if m is not None and name in m.names else None

    def member_by_endpoint(self, endpoint: Endpoint, now: float) -> Member | None:
        rows = self._call(lambda: self._at_endpoint(
            args=[self._p, f"{endpoint[0]}/{endpoint[1]}"]))
        found = [_member(bytes.fromhex(_text(net)), bytes.fromhex(_text(me)), rec)
                 for net, me, rec in rows]
        live = [m for m in found if m.expires > now and m.endpoint == endpoint]
        return max(live, key=lambda m: m.last_seen, default=None)

    def members(self, network: bytes, now: float) -> list[Member]:
        rows = self._call(lambda: self._members(args=[self._p, network.hex(), _number(now)]))
        return self._live(network, rows, now)

    @staticmethod
    def _live(network: bytes, rows: list[Any], now: float) -> list[Member]:
        """The members of a `LIST` result live at `now`, by static key."""
        found = [_member(network, bytes.fromhex(_text(me)), rec) for me, rec in rows]
        return sorted((m for m in found if m.expires > now), key=lambda m: m.static)

    def expire(self, now: float) -> list[Member]:
        """In batches of `EXPIRE_BATCH`: one script stays well inside `SOCKET_TIMEOUT` even
        when thousands of registrations run out at once. A batch already done is returned (so
        its members are announced) even if a later one meets an outage."""
        gone: list[Member] = []
        more = True
        while more:
            try:
                rows, flag = self._call(lambda: self._expire(
                    args=[self._p, _number(now), EXPIRE_BATCH]))
            except StoreUnavailable:
                if not gone:
                    raise
                break
            gone += [_member(bytes.fromhex(_text(net)), bytes.fromhex(_text(me)), rec)
                     for net, me, rec in rows]
            more = bool(flag)
        return gone

    def grant_relay(self, network: bytes, src: bytes, dest: bytes, grant_id: bytes,
                    token: bytes, until: float, now: float) -> bytes:
        args: list[ScriptArg] = [self._p, network.hex(), src.hex(), dest.hex(), grant_id.hex(),
                                 token, _number(until), _number(now), _ttl(until, now)]
        return bytes(self._call(lambda: self._grant(args=args)))

    def grant_relay_pair(self, network: bytes, a: bytes, b: bytes, ab: tuple[bytes, bytes],
                         ba: tuple[bytes, bytes], until: float, now: float) -> tuple[bytes, bytes]:
        args: list[ScriptArg] = [self._p, network.hex(), a.hex(), b.hex(), ab[0].hex(), ab[1],
                                 ba[0].hex(), ba[1], _number(until), _number(now),
                                 _ttl(until, now)]
        to_b, to_a = self._call(lambda: self._grant_pair(args=args))
        return bytes(to_b), bytes(to_a)

    def relay_grant(self, grant_id: bytes, now: float) -> RelayGrant | None:
        row = self._call(lambda: self._grant_lookup(args=[self._p, grant_id.hex(),
                                                          _number(now)]))
        if not row:
            return None
        token, network, src, dest, host, port = row[:6]
        server = _text(row[6]) if len(row) > 6 else ""
        return RelayGrant(bytes.fromhex(_text(network)), bytes.fromhex(_text(src)),
                          bytes.fromhex(_text(dest)), bytes(token), (_text(host), int(port)),
                          server)
