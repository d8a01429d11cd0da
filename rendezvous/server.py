"""The rendezvous server's asyncio (uvloop) shell around the pure `Registry`.

It only feeds datagrams in, sends the effects out and re-arms one timer. Two UDP sockets: the main
port (everything) and the netcheck port (PORT+1 by default; cookie requests only), so a node can
compare the endpoints both ports observe and tell an endpoint-independent NAT mapping from a
symmetric one. The registry's `now` is wall-clock time (`time.time()`): the SQLite store is shared
across restarts and servers. Every `STATS_INTERVAL`, and once on the way out, it logs one line of
counters (`stats_line`): requests by outcome, then the relay's forwarded packets and bytes,
drops by reason and how often each relay cap was hit.

State directory (the database's directory; created 0700):

| file                          | content                                         | mode |
|-------------------------------|-------------------------------------------------|------|
| `rendezvous.db` (-wal, -shm)  | registrations, counters, the cookie secret      | 0600 |
| `rendezvous.key`              | the server's static X25519 private key, base64  | 0600 |

With `--store redis://HOST:PORT/DB` the registrations, counters and cookie secret live in Redis
(`redisstore.py`) and no database file is written; the key file stays here. Servers sharing one
Redis are one deployment and must share one key: copy `rendezvous.key` to each of them (nodes
pin one key per server address, and pushes from any of them must open with it).

On Redis the servers form one network: each has an id (`--server-id`, default `HOSTNAME:PORT`,
stable across restarts because members record it), and pushes for another server's members
travel through Redis pub/sub (`pushbus.py`) to leave from that server's socket.

The key is created once (O_EXCL) and loaded on every start; nodes pin its public half, so
replacing it makes every node refuse this server until it is given the new key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from rendezvous.admission import OPEN, Admission
from rendezvous.protocol import DEFAULT_MAX_MEMBERS, MAX_MEMBERS_LIMIT
from rendezvous.pushbus import PushBus
from rendezvous.ratelimit import RELAY_NETWORK_RATE, RELAY_RATE, RELAY_TOTAL_RATE
from rendezvous.registry import REGISTRATION_TTL, Registry, Send
from rendezvous.store import SQLiteStore, Store
from tunnel.keys.identity import read_secret_file
from tunnel.keys.netkeys import encode_key, fingerprint
from tunnel.node.sockbuf import size_buffers
from tunnel.session.crypto import public_key

log = logging.getLogger(__name__)

STATS_INTERVAL = 60.0  # seconds between counter lines in the log
KEY_FILE = "rendezvous.key"
KEY_SIZE = 32  # bytes, X25519
# Receive buffer asked for on both ports. Linux's default (208 KiB, of which each small datagram
# takes about 1 KiB of accounting) holds a couple of hundred requests: a burst of a few hundred
# milliseconds (an expiry sweep, the CPU lent to another process) overflowed it in the load test
# and every dropped request came back a second later as a retransmission. 1 MiB holds about a
# second of requests at the rate one server sustains. Past net.core.rmem_max only with
# CAP_NET_ADMIN; capped otherwise, with a warning that names the sysctl (tunnel/node/sockbuf.py).
RECEIVE_BUFFER = 1 << 20  # bytes


def ensure_state_dir(directory: Path) -> None:
    """Create the state directory 0700 (with its parents). An existing one is left as it is:
    it may be a shared place such as /var/lib; the files in it are 0600 anyway."""
    if not directory.is_dir():  # mkdir raises FileExistsError for a file in the way
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask


def key_path(db: Path | str) -> Path:
    """The server's key file: `rendezvous.key` beside the database."""
    return Path(db).parent / KEY_FILE


def load_or_create_key(path: Path) -> tuple[bytes, bool]:
    """The server's static private key from `path`, created (O_EXCL, mode 0600) if missing; the
    flag says whether it is new. Raises OSError, or UserError for a key file others can read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret_file(path, KEY_SIZE, "rendezvous key"), False
    private = os.urandom(KEY_SIZE)
    try:
        os.write(fd, base64.b64encode(private) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return private, True


def describe_key(private: bytes) -> str:
    """`key <base64> (SHA256:...)`: what nodes need (`rendezvous_key`) and what they show."""
    public = public_key(private)
    return f"key {encode_key(public)} ({fingerprint(public)})"


def describe_store(db: Path | str, store_url: str | None) -> str:
    """`sqlite PATH` or `redis://HOST:PORT/DB` (never the URL's password)."""
    if store_url is None:
        return f"sqlite {db}"
    from rendezvous.redisstore import parse_store_url

    return parse_store_url(store_url).describe()


def _addr(addr: Any) -> tuple[str, int]:
    """(host, port) from an IPv4 or IPv6 socket address; v4-mapped v6 becomes plain v4."""
    host = str(addr[0])
    if host.startswith("::ffff:"):
        host = host[7:]
    return host, int(addr[1])


class _Port(asyncio.DatagramProtocol):
    def __init__(self, server: RendezvousServer,
                 handler: Callable[[bytes, tuple[str, int], float], list[Send]]) -> None:
        self.server = server
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None
        self.v6 = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport: no isinstance.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        self.v6 = sock is not None and sock.family == socket.AF_INET6

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.v6 and ":" not in addr[0]:
            # A dual-stack socket saw this IPv4 peer as ::ffff:a.b.c.d; the registry keeps the
            # plain IPv4 form, so map it back for sending.
            addr = ("::ffff:" + addr[0], addr[1])
        try:
            self.transport.sendto(data, addr)
        except OSError as exc:
            log.debug("send to %s failed: %s", _shown(addr), exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        sends = self.handler(data, _addr(addr), time.time())
        for send in sends:
            # Replies leave from the receiving port; pushes and relays from the main port.
            if not send.via and send.addr == _addr(addr):
                self.sendto(send.data, send.addr)
            else:
                self.server.send(send)
        self.server.rearm()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable after a node left) are normal for UDP.
        log.debug("socket error: %s", exc)


class RendezvousServer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.bus: PushBus | None = None  # with a Redis store: pushes for the other servers
        self.main: _Port | None = None
        self.netcheck: _Port | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._next_stats = time.time() + STATS_INTERVAL

    def send(self, send: Send) -> None:
        if send.via:
            if self.bus is not None:
                self.bus.publish(send.via, send.addr, send.data)
            else:  # a store that records other servers, but no bus to reach them
                self.registry.stats["push_unroutable"] += 1
        elif self.main is not None:
            self.main.sendto(send.data, send.addr)

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """A push another server made for one of ours (`PushBus`)."""
        if self.main is not None:
            self.main.sendto(data, addr)

    def rearm(self) -> None:
        deadline = self.registry.get_timer()
        if self._timer is not None:
            if abs(self._timer.when() - self._loop_time(deadline)) < 0.5:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(self._loop_time(deadline), self._on_timer)

    def _loop_time(self, wall: float) -> float:
        return self._loop.time() + max(0.0, wall - time.time())

    def _on_timer(self) -> None:
        self._timer = None
        now = time.time()
        for send in self.registry.handle_timer(now):
            self.send(send)
        if now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL
            log.info("%s", stats_line(self.registry, self.bus))
        self.rearm()


def stats_line(registry: Registry, bus: PushBus | None = None) -> str:
    """The counters so far: "stats accepted 12, cookie_retry 3; relay: forwarded ...", then
    the push bus's ("; pushes: push_published 4, ...") on Redis."""
    requests = ", ".join(f"{k} {v}" for k, v in sorted(registry.stats.items())) or "none"
    line = f"stats {requests}; {registry.relay.summary()}"
    if bus is not None:
        line += "; pushes: " + (", ".join(f"{k} {v}" for k, v in sorted(bus.stats.items()))
                                or "none")
    return line


def _shown(addr: tuple[str, int]) -> str:
    """`10.0.1.2:43540`, `[::]:7000`: an address in the log, never a Python tuple."""
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _bound(host: str, port: int) -> socket.socket:
    """A UDP socket bound to host:port; on an IPv6 address it is dual-stack (`[::]` hears IPv4
    nodes too, as ::ffff:a.b.c.d), whatever the system's default for IPV6_V6ONLY."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        size_buffers(sock, RECEIVE_BUFFER)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def open_store(db: Path | str, store_url: str | None) -> Store:
    """The SQLite database `db`, or the Redis at `store_url` (`redis://HOST:PORT/DB`). Raises
    ValueError for a bad URL, StoreUnavailable, sqlite3.Error or OSError."""
    if store_url is None:
        return SQLiteStore(db)
    from rendezvous.redisstore import RedisStore  # only a server on Redis needs the package

    store = RedisStore(store_url)
    try:
        store.cookie_secret(os.urandom(32))  # one round trip now: fail at start, not later
    except BaseException:
        store.close()
        raise
    return store


async def serve(listen: tuple[str, int], db: Path | str, relay: bool = True,
                netcheck_port: int | None = None, relay_rate: float = RELAY_RATE,
                ready: Callable[[], None] | None = None,
                registration_ttl: float = REGISTRATION_TTL,
                relay_network_rate: float = RELAY_NETWORK_RATE,
                relay_total_rate: float = RELAY_TOTAL_RATE,
                admission: Admission = OPEN,
                static_private: bytes | None = None,
                max_members: int = DEFAULT_MAX_MEMBERS,
                store_url: str | None = None, server_id: str | None = None) -> None:
    """Run until cancelled. Rates are bytes per second (per node, per network, in all);
    `admission` is the `--networks` policy (open by default). `static_private`: the server's key
    (default: loaded from, or created in, `rendezvous.key` beside the database). `store_url`:
    `redis://HOST:PORT/DB` to keep the state in Redis instead of the SQLite file `db`.
    `server_id`: this server's name among those on one Redis (default `HOSTNAME:PORT`)."""
    loop = asyncio.get_running_loop()
    ensure_state_dir(Path(db).parent)
    created = False
    if static_private is None:
        static_private, created = load_or_create_key(key_path(db))
    store = open_store(db, store_url)
    host, port = listen
    if store_url is None:
        server_id = ""  # one SQLite host: every member is this server's (or sent as before)
    elif server_id is None:
        server_id = f"{socket.gethostname()}:{port}"
    registry = Registry(store, server_id=server_id, relay_enabled=relay, relay_rate=relay_rate,
                        registration_ttl=registration_ttl, relay_network_rate=relay_network_rate,
                        relay_total_rate=relay_total_rate, admission=admission,
                        static_private=static_private, max_members=max_members)
    server = RendezvousServer(registry)
    bus_task: asyncio.Task[None] | None = None
    if store_url is not None:
        from rendezvous.redisstore import PREFIX

        server.bus = PushBus(store_url, server_id, PREFIX, server.deliver)
        bus_task = loop.create_task(server.bus.run())
    nport = netcheck_port if netcheck_port is not None else port + 1
    main_t, main_p = await loop.create_datagram_endpoint(
        lambda: _Port(server, registry.handle), sock=_bound(host, port))
    nc_t, nc_p = await loop.create_datagram_endpoint(
        lambda: _Port(server, registry.handle_netcheck), sock=_bound(host, nport))
    server.main, server.netcheck = main_p, nc_p
    server.rearm()
    relay_text = (f"on ({relay_rate:.0f} B/s per node, {relay_network_rate:.0f} per network,"
                  f" {relay_total_rate:.0f} in all)") if relay else "off"
    log.info("rendezvous listening on %s (netcheck %d), store %s%s, relay %s, networks %s, %s",
             _shown((host, port)), nport, describe_store(db, store_url),
             f" as server {server_id}" if server_id else "", relay_text,
             admission.describe(), describe_key(static_private))
    if created:
        log.info("created the rendezvous key %s", key_path(db))
    if ready is not None:
        ready()
    try:
        await asyncio.Event().wait()
    finally:
        log.info("%s", stats_line(registry, server.bus))
        main_t.close()
        nc_t.close()
        if bus_task is not None and server.bus is not None:
            bus_task.cancel()
            await server.bus.close()
        store.close()


def run(listen: tuple[str, int], db: Path | str, relay: bool = True,
        netcheck_port: int | None = None, relay_rate: float = RELAY_RATE,
        registration_ttl: float = REGISTRATION_TTL,
        max_members: int = DEFAULT_MAX_MEMBERS, store_url: str | None = None,
        server_id: str | None = None) -> None:
    """Blocking entry point: installs uvloop when available."""
    main = serve(listen, db, relay, netcheck_port, relay_rate, None, registration_ttl,
                 max_members=max_members, store_url=store_url, server_id=server_id)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    """`python -m rendezvous.server --listen HOST:PORT --db PATH [--no-relay] [--max-members N]`
    (tests, labs)."""
    parser = argparse.ArgumentParser(prog="rendezvous.server")
    parser.add_argument("--listen", default="0.0.0.0:7000")
    parser.add_argument("--db", default="rendezvous.db")
    parser.add_argument("--store", default=None, help="redis://HOST:PORT/DB instead of --db")
    parser.add_argument("--server-id", default=None,
                        help="this server's name among those on one Redis (default HOSTNAME:PORT)")
    parser.add_argument("--netcheck-port", type=int, default=None)
    parser.add_argument("--no-relay", action="store_true")
    parser.add_argument("--max-members", type=_max_members, default=DEFAULT_MAX_MEMBERS,
                        metavar="N", help="nodes one network may register at once "
                        f"(1-{MAX_MEMBERS_LIMIT}, default {DEFAULT_MAX_MEMBERS})")
    parser.add_argument("--registration-ttl", type=float, default=REGISTRATION_TTL,
                        help=argparse.SUPPRESS)  # labs shorten it to watch expiry
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        run((host.strip("[]"), int(port)), args.db, not args.no_relay, args.netcheck_port,
            registration_ttl=args.registration_ttl, max_members=args.max_members,
            store_url=args.store, server_id=args.server_id)
    except KeyboardInterrupt:
        return 130
    return 0


def _max_members(text: str) -> int:
    """`--max-members`: a member list carries at most MAX_MEMBERS_LIMIT nodes."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_MEMBERS_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a member cap; use 1-{MAX_MEMBERS_LIMIT}")
    return int(text)


if __name__ == "__main__":
    raise SystemExit(main())
