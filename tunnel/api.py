"""Embed a tunnel in a Python program (as Go programs embed Tailscale's tsnet).

    from tunnel.api import Tunnel

    async with Tunnel(rendezvous="192.0.2.10:7000") as tunnel:      # keys from $PTUNNEL_HOME
        web = await tunnel.expose(8080, "dev-web")                 # reachable as "dev-web"
        db = await tunnel.connect("office-db", 5432)               # localhost:5432 -> office-db
        print(db.describe(), db.stats())
        ...
        await db.close()

`expose` returns once the name is registered at the rendezvous (`expose_all` registers several
in one request, as `ptunnel up` does); `connect` returns once a path to
the peer is up and a local port listens. Both keep working across peer restarts, rendezvous
outages and NAT reboots (re-punching, relay fallback, reconnect with backoff) until closed.
Failures users can fix raise `TunnelError` with a one-line message saying what to do; a
rendezvous that does not answer at all is reported after RENDEZVOUS_TIMEOUT (plus the time to
move on, `rc.FAILOVER_SILENCE`, for each further server of a list).

Names are case-insensitive, like DNS labels: "SSH-Home" is "ssh-home". A name that cannot be one
is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rendezvous.protocol import MAX_NAMES, normalize_name
from tunnel.addresses import format_endpoint, parse_endpoints
from tunnel.errors import RuntimeFailure, UserError
from tunnel.forward.bridge import StreamBridge, reset_tcp
from tunnel.forward.exposing import ExposedService
from tunnel.forward.forwarder import Forwarder
from tunnel.forward.udp_flows import UdpListener
from tunnel.forward.wire import encode_open
from tunnel.keys.identity import Identity, default_home, load_identity, load_network_secret
from tunnel.keys.netkeys import fingerprint
from tunnel.keys.pins import (
    PinResult,
    PinStore,
    ServerKeyMismatch,
    ServerPins,
    joined_rendezvous,
)
from tunnel.node.netcheck import family, resolve
from tunnel.node.node import NO_ANSWER, NO_PATH, NO_SESSION, Node, NodeOptions
from tunnel.node.peer import Peer
from tunnel.node.udp import monotonic
from tunnel.path import rendezvous as rc

log = logging.getLogger(__name__)

RECONNECT_MIN = 1.0  # s; first retry after losing a peer
RECONNECT_MAX = 30.0  # s; backoff cap, as a returning peer should be found within half a minute
PENDING_CONNECTION_TIMEOUT = 30.0  # s; a local connection waits this long for the tunnel
CHECK_INTERVAL = 0.5  # s; how often a connection looks again while its peer is not ready
# A ready connection with no local connection waiting sleeps until its link or the rendezvous
# says something changed; it looks anyway this often, a net under that news.
QUIET_CHECK_INTERVAL = 30.0  # s
# The rendezvous answers within a round trip; the client sends at 0, 1 and 3 s, so 5 s of
# silence means it is down or UDP to it is blocked, not that one datagram was lost.
RENDEZVOUS_TIMEOUT = 5.0  # s
ANY_IPV4 = ("0.0.0.0", 0)  # the node's default bind; ("::", 0) instead for an IPv6 rendezvous


class TunnelError(RuntimeFailure):
    """Something the user can fix; the message says what and how."""


class LocalPortError(TunnelError):
    """The local port of a connect cannot be listened on; `problem` says why without the
    CLI's advice, so that `ptunnel up` can name the config key to change instead."""

    def __init__(self, problem: str, fix: str = "pick another with -L [BIND:]PORT") -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


def _bound_udp_socket(host: str, port: int) -> socket.socket:
    """A UDP socket bound to host:port. Bound here, not by uvloop's
    `create_datagram_endpoint(local_addr=)`, whose OSError has lost the errno ("could not bind
    to local_addr"), so a port in use could not be told from any other failure."""
    sock = socket.socket(family(host), socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _unknown_name(name: str) -> str:
    return f"no node named '{name}' in your network; is `ptunnel expose` running there?"


def rendezvous_servers(given: tuple[str, int] | str | list[tuple[str, int] | str]
                       ) -> list[tuple[str, int]]:
    """The servers to use, first one first: one address, `HOST:PORT,HOST:PORT`, or a list of
    either. Raises TunnelError for one that is not HOST:PORT."""
    items = given if isinstance(given, list) else [given]
    servers: list[tuple[str, int]] = []
    for item in items:
        try:
            found = parse_endpoints(item) if isinstance(item, str) else [item]
        except ValueError as exc:
            raise TunnelError(f"rendezvous {exc}; give HOST:PORT, or several as "
                              "HOST:PORT,HOST:PORT") from None
        servers += [a for a in found if a not in servers]
    if not servers:
        raise TunnelError("no rendezvous server given; pass --rendezvous HOST:PORT or set "
                          "PTUNNEL_RENDEZVOUS")
    return servers


def _no_answer(rendezvous: tuple[str, int], silent_for: float | None = None) -> str:
    since = "" if silent_for is None else f" for {silent_for:.0f} s"
    return (f"no answer from the rendezvous at {format_endpoint(rendezvous)}{since}; is `ptunnel "
            "rendezvous` running there and is UDP allowed? (try `ptunnel netcheck`)")


def _path_name(link: Peer) -> str:
    """The path in use, without its RTT: "direct lan 10.0.1.2:43540", "relay via rendezvous"."""
    return link.describe_path().split(", rtt")[0]


@dataclass(frozen=True, slots=True)
class PingResult:
    """One ping: its round trip, or where it was lost."""

    rtt: float | None  # seconds; None when lost
    lost: str | None  # when lost: NO_SESSION, NO_PATH (never sent) or NO_ANSWER (sent, unanswered)
    path: str  # the path it was sent on (or would have been): "direct lan …", "no path"

    def as_dict(self, seq: int) -> dict[str, Any]:
        return {"seq": seq, "rtt_ms": None if self.rtt is None else round(self.rtt * 1e3, 3),
                "lost": self.lost, "path": self.path}


def check_name(name: str) -> str:
    """`name` as the network knows it (lower case); TunnelError with the rule if it is none."""
    try:
        return normalize_name(name)
    except ValueError as exc:
        raise TunnelError(str(exc)) from None


# Where a forward came from, for `ptunnel status`: the program that embeds the API, `up`'s
# config file, the command that started the node, or a command added to the running node.
ORIGINS = ("api", "config", "command", "added")


@dataclass(frozen=True, slots=True)
class Service:
    """A local service to expose under `name` (`Tunnel.expose_all`; `expose` takes the same)."""

    port: int
    name: str
    host: str = "127.0.0.1"
    udp: bool = False
    allow: tuple[bytes, ...] | None = None  # the keys allowed (None: every member the node allows)


class Exposed:
    """A service registered under a name; close() stops exposing it."""

    def __init__(self, tunnel: Tunnel, service: ExposedService, origin: str = "api") -> None:
        self.tunnel, self.service, self.origin = tunnel, service, origin

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def port(self) -> int:
        """The port `ptunnel stop PORT` knows this forward by: the exposed service's."""
        return self.service.target[1]

    def stats(self) -> dict[str, Any]:
        return {"kind": "expose", "name": self.service.name,
                "target": format_endpoint(self.service.target),
                "udp": self.service.udp, "streams": self.service.streams,
                "refused": self.service.refused, "origin": self.origin,
                "live": self.tunnel.forwarder.exposing.live(self.service.name)}

    async def close(self) -> None:
        """Stop exposing: refuse new streams and give the name back at the rendezvous."""
        if self.tunnel.forwarder.services.pop(self.service.name, None) is not None:
            self.tunnel.node.remove_names([self.service.name])
        if self in self.tunnel.exposed:
            self.tunnel.exposed.remove(self)


class Connection:
    """A local port carrying connections to a remote service; close() stops listening."""

    def __init__(self, tunnel: Tunnel, name: str, listen: tuple[str, int] | None, udp: bool,
                 accept_new_key: bool, origin: str = "api") -> None:
        self.tunnel, self.name, self.listen, self.udp = tunnel, name, listen, udp
        self.accept_new_key, self.origin = accept_new_key, origin
        # What this connect did to the pin of `name` ("pinned the key of 'web': SHA256:…"), for
        # the terminal: a first pin is news the user should see, not only in the log.
        self.pin_news: str | None = None
        self._bridges: set[StreamBridge] = set()  # local TCP connections, for `live`
        self.link: Peer | None = None
        # Set when the link or the rendezvous says something about this connection changed:
        # `_wait_ready` and then the keeper wait for it, and look again.
        self._news = asyncio.Event()
        self._keeper_idle = False  # the keeper sleeps for QUIET_CHECK_INTERVAL
        self.error: TunnelError | None = None
        # For `status`: since when no peer carries this connection, and what the rendezvous
        # last said against it (an unknown name, a changed key).
        self.waiting_since: float | None = monotonic()
        self.refusal: str | None = None
        self.waiting: list[StreamBridge] = []
        self._expiry: dict[StreamBridge, asyncio.TimerHandle] = {}
        self.server: asyncio.AbstractServer | None = None
        self.udp_listener: UdpListener | None = None
        self._task: asyncio.Task[None] | None = None

    # --- set-up -------------------------------------------------------------------------------

    async def open(self, timeout: float, wait: bool = False,
                   on_ready: Callable[[Connection], None] | None = None) -> None:
        """Listen, then find the peer. `wait`: return at once and keep trying in the
        background (a daemon's peer may start later); `on_ready` runs when the path is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.listen is not None:
            await self._listen(loop)
        self.tunnel.node.rdv_events.append(self._on_rendezvous)
        if wait:
            self._task = loop.create_task(self._keep_up(on_ready, waiting=True))
            return
        try:
            # The server introduces registered nodes only; its silence is reported early.
            await asyncio.wait_for(self.tunnel.node.registered.wait(),
                                   min(timeout, self.tunnel.with_failover(RENDEZVOUS_TIMEOUT)))
            await asyncio.wait_for(self._wait_ready(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            await self.close()
            raise TunnelError(self._timeout_message()) from None
        except asyncio.CancelledError:
            await self.close()  # a cancelled connect leaves no listening port behind
            raise
        if self.error is not None:
            await self.close()
            raise self.error
        self._task = loop.create_task(self._keep_up())

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.listen is not None
        host, port = self.listen
        try:
            if self.udp:
                listener = UdpListener(self.tunnel.forwarder, self.name)
                await loop.create_datagram_endpoint(lambda: listener,
                                                    sock=_bound_udp_socket(host, port))
                self.udp_listener = listener
                self.tunnel.forwarder.udp_listeners[self.name] = listener
            else:
                self.server = await loop.create_server(self._new_bridge, host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LocalPortError(f"local port {host}:{port} is already in use",
                                     "pick another with -L PORT") from None
            if exc.errno == errno.EACCES and port < 1024:
                raise LocalPortError(f"cannot listen on {host}:{port}: ports below 1024 need "
                                     "root", "pick a port above 1023 with -L PORT") from None
            raise LocalPortError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        if isinstance(self.server, asyncio.Server) and port == 0:
            self.listen = self.server.sockets[0].getsockname()[:2]

    def _timeout_message(self) -> str:
        node = self.tunnel.node
        if self.tunnel.server_key_error is not None:
            return self.tunnel.server_key_error.message
        if not node.registered.is_set():
            return _no_answer(node.rendezvous_server)
        if self.link is None:
            return self.refusal or _unknown_name(self.name)
        return self._no_path(self.link, monotonic())

    def _no_path(self, link: Peer, now: float) -> str:
        node = self.tunnel.node
        tried = ", ".join(f"{format_endpoint(r.addr)} ({r.kind})" for r in link.path.report(now))
        # The node's netcheck at start says why punching may have failed.
        kind = {"endpoint-independent": "endpoint-independent (cone)",
                "endpoint-dependent": "endpoint-dependent (symmetric)"}.get(node.nat_mapping)
        nat = f"; this node's NAT maps {kind}" if kind else ""
        hint = " and the relay is off (--direct-only)" if node.options.direct_only else ""
        return (f"found '{self.name}' but no path opened (tried {tried or 'nothing'}){nat}{hint}; "
                "see `ptunnel netcheck` on both machines")

    async def _wait_ready(self) -> None:
        self.tunnel.node.request_connect(self.name)
        while self.error is None and not (self.link is not None and self.link.ready):
            self._news.clear()
            await self._news.wait()
        if self.link is not None and self.error is None:
            await self.ping(timeout=0.2)  # an RTT for the ready line; not worth waiting long for

    def _on_rendezvous(self, event: rc.Event) -> None:
        if isinstance(event, rc.Introduced) and event.peer_name == self.name:
            self._news.set()
            try:
                pinned = self.tunnel.pins.check(self.name, event.peer_static, self.accept_new_key)
            except UserError as exc:  # a changed key, or known_nodes cannot be written
                self.error = TunnelError(exc.message)
                self.refusal = exc.message
                return
            if pinned is PinResult.NEW:
                self.pin_news = (f"pinned the key of '{self.name}': "
                                 f"{fingerprint(event.peer_static)} (first contact)")
            elif pinned is PinResult.REPLACED:
                self.pin_news = (f"replaced the pinned key of '{self.name}' with "
                                 f"{fingerprint(event.peer_static)} (--accept-new-key)")
            self.refusal = None
            link = self.tunnel.node.peers[event.peer_static]
            if self.link is not link:
                self.link = link
                link.on_change.append(self._on_link_change)
            self._on_link_change(link)
        elif isinstance(event, rc.ConnectRefused) and event.name == self.name:
            self._news.set()
            unknown = event.reason.startswith("no active node")
            self.refusal = (_unknown_name(self.name) if unknown
                            else f"the rendezvous did not introduce '{self.name}': {event.reason}")
            if self.link is None and unknown:
                self.error = TunnelError(self.refusal)

    def _on_link_change(self, link: Peer) -> None:
        self._track(monotonic())
        self._news.set()
        if link.ready and self.udp_listener is not None:
            self.udp_listener.link = link
        if self._up():
            self._retry_waiting()

    # --- local connections --------------------------------------------------------------------

    def _new_bridge(self) -> StreamBridge:
        bridge = StreamBridge(self.tunnel.forwarder)
        bridge.on_attach = self._attach_new
        self._bridges = {b for b in self._bridges if not b.closed}
        self._bridges.add(bridge)
        return bridge

    @property
    def port(self) -> int | None:
        """The local port `ptunnel stop PORT` knows this forward by."""
        return None if self.listen is None else self.listen[1]

    def live(self) -> int:
        """Local connections open now (TCP), or flows (UDP)."""
        if self.udp_listener is not None:
            return len(self.udp_listener.flows)
        return sum(1 for bridge in self._bridges if not bridge.closed)

    def _attach_new(self, bridge: StreamBridge) -> None:
        """A new local connection: whatever the node has overdue first (`Node.catch_up`)."""
        self.tunnel.node.catch_up()
        self._attach(bridge)

    def _attach(self, bridge: StreamBridge) -> None:
        """Give a local connection its stream, or let it wait (no path yet, or the peer's
        stream limit reached) for up to PENDING_CONNECTION_TIMEOUT."""
        link = self.link
        if bridge.closed:
            self._expiry.pop(bridge, None)
            return
        # Not while the peer is lost: a stream opened on the channel of a peer that crashed
        # would be reset when its successor is found; waiting, it goes to whichever is current.
        channel = link.channel if link is not None and self._up() else None
        if link is None or channel is None or not channel.can_open_stream():
            self.waiting.append(bridge)
            if self._keeper_idle:
                self._news.set()  # it looks every CHECK_INTERVAL while connections wait
            if bridge not in self._expiry:
                self._expiry[bridge] = asyncio.get_running_loop().call_later(
                    PENDING_CONNECTION_TIMEOUT, self._expire, bridge)
            return
        expiry = self._expiry.pop(bridge, None)
        if expiry is not None:
            expiry.cancel()
        stream_id = channel.open_stream()
        bridge.attach(link, stream_id, encode_open(self.name))

    def _retry_waiting(self) -> None:
        waiting, self.waiting = self.waiting, []
        for bridge in waiting:
            self._attach(bridge)

    def _expire(self, bridge: StreamBridge) -> None:
        self._expiry.pop(bridge, None)
        if bridge in self.waiting:
            self.waiting.remove(bridge)
            log.warning("%s: no tunnel within %.0f s; closing a waiting local connection",
                        self.name, PENDING_CONNECTION_TIMEOUT)
            if bridge.transport is not None:
                reset_tcp(bridge.transport)

    async def _keep_up(self, on_ready: Callable[[Connection], None] | None = None,
                       waiting: bool = False) -> None:
        """Reconnect with exponential backoff whenever the peer is lost (or not there yet)."""
        backoff = RECONNECT_MIN
        if waiting:
            await self.tunnel.node.registered.wait()
            self.tunnel.node.request_connect(self.name)
        while True:
            await self._next_look()
            self._track(monotonic())
            if self.error is not None:
                log.warning("%s: %s", self.name, self.error.message)
                self.error = None
            if self.link is not None and self.link.ready:
                backoff = RECONNECT_MIN
                if self.waiting:
                    self._retry_waiting()  # the peer's stream credit may have grown
                if waiting:
                    waiting = False
                    if on_ready is not None:
                        on_ready(self)
                continue
            log.info("%s: peer not reachable; asking the rendezvous again in %.0f s",
                     self.name, backoff)
            await asyncio.sleep(backoff)
            if self.link is None or not self.link.ready:
                self.tunnel.node.request_connect(self.name)
            backoff = min(backoff * 2, RECONNECT_MAX)

    async def _next_look(self) -> None:
        """Wait until the keeper should look again: at the next news of the link or the
        rendezvous, and at most CHECK_INTERVAL while the peer is not ready or local connections
        wait (no news says when the peer's stream limit grows). So an idle ready connection
        does not wake its process twice a second."""
        up = self.link is not None and self.link.ready
        self._keeper_idle = up and not self.waiting
        try:
            async with asyncio.timeout(QUIET_CHECK_INTERVAL if self._keeper_idle
                                       else CHECK_INTERVAL):
                await self._news.wait()
        except TimeoutError:
            pass
        finally:
            self._keeper_idle = False
        self._news.clear()

    # --- pings and reporting ------------------------------------------------------------------

    async def ping(self, timeout: float = 1.0) -> float | None:
        """One round trip to the peer over the path in use, in seconds; None if unanswered
        (`round_trip` says why)."""
        return (await self.round_trip(timeout)).rtt

    async def round_trip(self, timeout: float = 1.0) -> PingResult:
        """One ping over the path in use: its round trip, or where it was lost."""
        link = self.link
        if link is None:
            return PingResult(None, NO_SESSION, "no path")
        path = _path_name(link)
        answer = self.tunnel.node.ping(link)
        if isinstance(answer, str):
            return PingResult(None, answer, path)
        try:
            return PingResult(await asyncio.wait_for(answer, timeout), None, path)
        except TimeoutError:
            return PingResult(None, NO_ANSWER, path)

    # --- what `status` shows --------------------------------------------------------------------

    def _up(self) -> bool:
        """A peer carries this connection: a path and a channel, and nothing gone silent."""
        link = self.link
        return link is not None and link.ready and link.reconnecting_since is None

    def _track(self, now: float) -> None:
        if self._up():
            self.waiting_since = None
        elif self.waiting_since is None:
            self.waiting_since = now

    def waiting_reason(self, now: float) -> str | None:
        """Why no peer carries this connection now; None when one does."""
        link = self.link
        if self._up():
            return None
        if link is None:
            health = self.tunnel.node.rendezvous_health(now)
            if not health.registered:
                server = self.tunnel.node.rendezvous_server
                if health.unanswered is not None and health.unanswered >= rc.SILENT_AFTER:
                    return _no_answer(server, health.unanswered)
                return f"waiting for the rendezvous at {format_endpoint(server)}"
            return self.refusal or f"asked the rendezvous for '{self.name}'; no answer yet"
        if link.reconnecting_since is not None:
            return f"lost '{self.name}': {link.state(now)}"
        if link.path.path is not None:
            return f"found '{self.name}' ({_path_name(link)}); its channel is not open yet"
        return self._no_path(link, now)

    def describe(self) -> str:
        path = self.link.describe_path() if self.link is not None else "no path"
        if self.listen is None:
            return f"{self.name}: {path}"
        return f"{self.name} on {format_endpoint(self.listen)}{'/udp' if self.udp else ''}: {path}"

    def stats(self) -> dict[str, Any]:
        now = monotonic()
        self._track(now)
        peer = self.link.status(now) if self.link is not None else {}
        reason = self.waiting_reason(now)
        return {
            "kind": "connect", "origin": self.origin, "live": self.live(),
            "name": self.name, "udp": self.udp,
            "listen": None if self.listen is None else format_endpoint(self.listen),
            "state": peer.get("state", "connecting"), "ready": reason is None,
            "waiting_s": None if self.waiting_since is None
            else round(now - self.waiting_since, 1),
            "reason": reason,
            "path": peer.get("path"), "direct": peer.get("direct", False),
            "rtt_ms": peer.get("rtt_ms"), "bytes_sent": peer.get("bytes_sent", 0),
            "bytes_received": peer.get("bytes_received", 0),
            "open_streams": peer.get("open_streams", 0),
        }

    async def close(self) -> None:
        if self in self.tunnel.connections:
            self.tunnel.connections.remove(self)
        if self._task is not None:
            self._task.cancel()
        if self.server is not None:
            self.server.close()
        if self.udp_listener is not None and self.udp_listener.transport is not None:
            self.udp_listener.transport.close()
            self.tunnel.forwarder.udp_listeners.pop(self.name, None)
        with contextlib.suppress(ValueError):
            self.tunnel.node.rdv_events.remove(self._on_rendezvous)


class Tunnel:
    """One node: its keys, its rendezvous registration and every expose and connect on it."""

    def __init__(
        self,
        *,
        home: Path | str | None = None,
        rendezvous: tuple[str, int] | str | list[tuple[str, int] | str] | None = None,
        rendezvous_key: bytes | None = None,
        identity: Identity | None = None,
        network_secret: bytes | None = None,
        allow: list[bytes] | None = None,
        direct_only: bool = False,
        congestion: str = "bbr",
        keepalive: float = 25.0,
        bind: tuple[str, int] = ANY_IPV4,
    ) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        identity = identity or load_identity(self.home)
        secret = network_secret or load_network_secret(self.home)
        if identity is None or secret is None:
            raise TunnelError("not joined to a network; run `ptunnel init` (new network) or "
                              "`ptunnel join CODE`")
        if rendezvous is None:
            joined = joined_rendezvous(self.home)  # a ptn2 join code names it
            if not joined:
                raise TunnelError("no rendezvous server given; pass --rendezvous HOST:PORT or "
                                  "set PTUNNEL_RENDEZVOUS")
            rendezvous = list(joined)
        servers = rendezvous_servers(rendezvous)
        addr = servers[0]
        # Server keys are pinned under the address as configured, before it is resolved.
        self.server_name = format_endpoint(addr)
        self.server_pins = ServerPins(self.home)
        self.server_key_error: TunnelError | None = None
        self.options = NodeOptions(identity=identity, network_secret=secret, rendezvous=addr,
                                   rendezvous_key=rendezvous_key
                                   or self.server_pins.get(self.server_name),
                                   rendezvous_fallbacks=tuple(servers[1:]),
                                   allow=allow, bind=bind, keepalive=keepalive,
                                   direct_only=direct_only, congestion=congestion,
                                   state_dir=self.home)
        self.node = Node(self.options)
        self.forwarder = Forwarder(self.node)
        self.pins = PinStore(self.home)
        self.connections: list[Connection] = []
        self.exposed: list[Exposed] = []
        self._started = False
        # Calls of start() made together (by an API user, or a `ptunnel expose` added to an `up`
        # that is starting) start the node once.
        self._starting = asyncio.Lock()

    async def __aenter__(self) -> Tunnel:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        async with self._starting:
            if self._started:
                return
            self._started = True
            self.options.rendezvous = await self._resolve(self.options.rendezvous)
            self.options.rendezvous_fallbacks = tuple(
                [await self._resolve(a) for a in self.options.rendezvous_fallbacks])
            self.node.rdv_events.append(self._on_server_key)
            if self.options.bind == ANY_IPV4 and ":" in self.options.rendezvous[0]:
                self.options.bind = ("::", 0)  # an IPv6 rendezvous: the node speaks IPv6
            await self.node.start()
            self.forwarder.start()

    def _on_server_key(self, event: rc.Event) -> None:
        """Pin the rendezvous' key on first use; a changed key is an error nothing clears."""
        try:
            if isinstance(event, rc.ServerKeyLearned):
                self.server_pins.check(self.server_name, event.key)
            elif isinstance(event, rc.ServerKeyChanged):
                raise ServerKeyMismatch(self.server_name, event.pinned, event.offered,
                                        self.server_pins.path)
        except UserError as exc:  # a mismatch, or known_rendezvous cannot be written
            self.server_key_error = TunnelError(exc.message)
            log.error("%s", exc.message)

    @staticmethod
    async def _resolve(addr: tuple[str, int]) -> tuple[str, int]:
        """The rendezvous as an IP address (replies are matched by their source address):
        IPv4 when the name has both kinds (see `tunnel.node.netcheck.resolve`), else IPv6."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, resolve, addr)
        except OSError as exc:
            raise TunnelError(f"cannot resolve the rendezvous host {addr[0]!r}: "
                              f"{exc.strerror or exc}; check --rendezvous or PTUNNEL_RENDEZVOUS"
                              ) from None

    def with_failover(self, timeout: float) -> float:
        """`timeout` for one server, stretched by the time a silent server takes to be left
        for the next one of the list (`rc.FAILOVER_SILENCE` each)."""
        return timeout + rc.FAILOVER_SILENCE * len(self.options.rendezvous_fallbacks)

    async def expose(self, port: int, name: str, *, host: str = "127.0.0.1", udp: bool = False,
                     allow: list[bytes] | None = None,
                     timeout: float | None = RENDEZVOUS_TIMEOUT, origin: str = "api") -> Exposed:
        """Register `name` and forward every authorized peer's connections to host:port.

        Raises TunnelError if the rendezvous does not answer within `timeout` seconds, plus the
        time to move on to each further server of a list (None: wait as long as it takes, as a
        daemon does; the node keeps asking)."""
        service = Service(port, name, host, udp, None if allow is None else tuple(allow))
        (exposed,) = await self.expose_all([service], timeout=timeout, origin=origin)
        return exposed

    async def expose_all(self, services: Sequence[Service], *,
                         timeout: float | None = RENDEZVOUS_TIMEOUT,
                         origin: str = "api") -> list[Exposed]:
        """Expose every one of `services` at once, their names registered in one request.

        Each is served from the start: before the node starts and while it registers, since a
        restarted node's peers reach it at its old address and open streams at once. It returns
        once the rendezvous has registered every name; it raises TunnelError as `expose` does,
        and then exposes none of them."""
        names = [check_name(service.name) for service in services]
        for name in names:
            if name in self.forwarder.services:
                raise TunnelError(f"'{name}' is already exposed by this node")
            if names.count(name) > 1:
                raise TunnelError(f"'{name}' is listed more than once")
        if len(self.forwarder.services) + len(names) > MAX_NAMES:
            raise TunnelError(f"a node can expose at most {MAX_NAMES} names; run another "
                              "ptunnel with its own PTUNNEL_HOME for more")
        served = [ExposedService(name, (service.host, service.port), service.udp,
                                 None if service.allow is None else frozenset(service.allow))
                  for name, service in zip(names, services, strict=True)]
        for service in served:
            self.forwarder.services[service.name] = service
        refused: list[rc.RegistrationRefused] = []
        registered = asyncio.Event()

        def watch(event: rc.Event) -> None:
            if isinstance(event, rc.RegistrationRefused):
                refused.append(event)
                registered.set()
            elif isinstance(event, rc.ServerKeyChanged) or (
                    isinstance(event, rc.Registered) and self.node.holds(names)):
                registered.set()  # not an earlier registration that lacked these names

        self.node.rdv_events.append(watch)
        try:
            self.node.add_names(names)  # before a start: its first registration carries them
            await self.start()
            await asyncio.wait_for(registered.wait(),
                                   None if timeout is None else self.with_failover(timeout))
        except TimeoutError:
            self._unexpose(names)
            raise (self.server_key_error
                   or TunnelError(_no_answer(self.node.rendezvous_server))) from None
        except BaseException:
            self._unexpose(names)  # cancelled, or the node could not start: no name left behind
            raise
        finally:
            self.node.rdv_events.remove(watch)
        if self.server_key_error is not None:
            self._unexpose(names)
            raise self.server_key_error
        if refused:
            self._unexpose(names)
            event = refused[0]
            holder = (f" (held by {event.holder_fingerprint})" if event.holder_fingerprint
                      and event.holder_fingerprint not in event.reason else "")
            quoted = ", ".join(f"'{name}'" for name in names)
            raise TunnelError(f"the rendezvous refused {quoted}: {event.reason}{holder}")
        exposed = [Exposed(self, service, origin) for service in served]
        self.exposed += exposed
        for service in served:
            log.info("exposing %s as '%s' (node %s)", format_endpoint(service.target),
                     service.name, fingerprint(self.options.identity.public))
        return exposed

    def _unexpose(self, names: Sequence[str]) -> None:
        for name in names:
            self.forwarder.services.pop(name, None)
        self.node.remove_names(names)

    async def connect(self, name: str, port: int, *, bind: str = "127.0.0.1", udp: bool = False,
                      accept_new_key: bool = False, timeout: float = 30.0, wait: bool = False,
                      on_ready: Callable[[Connection], None] | None = None,
                      origin: str = "api") -> Connection:
        """Listen on bind:port and carry every local connection to the peer named `name`.

        By default this returns once the path is up and raises `TunnelError` if it cannot come
        up; with `wait=True` it returns at once and keeps trying (for daemons), calling
        `on_ready` when the path is up. A rendezvous that does not answer at all is reported
        after RENDEZVOUS_TIMEOUT (or `timeout` if that is shorter)."""
        name = check_name(name)
        await self.start()
        connection = Connection(self, name, (bind, port), udp, accept_new_key, origin)
        await self._open(connection, timeout, wait, on_ready)
        return connection

    async def reach(self, name: str, *, accept_new_key: bool = False,
                    timeout: float = 30.0) -> Connection:
        """A path to `name` without a local port (for pings and programs that only measure)."""
        name = check_name(name)
        await self.start()
        connection = Connection(self, name, None, False, accept_new_key)
        await self._open(connection, timeout)
        return connection

    async def _open(self, connection: Connection, timeout: float, wait: bool = False,
                    on_ready: Callable[[Connection], None] | None = None) -> None:
        self.connections.append(connection)  # `status` shows it while it waits for its peer
        try:
            await connection.open(timeout, wait, on_ready)
        except BaseException:
            await connection.close()
            raise

    async def ping(self, name: str, *, count: int = 5, interval: float = 0.5,
                   on_reply: Callable[[int, float | None, str], None] | None = None,
                   on_result: Callable[[int, PingResult], None] | None = None,
                   accept_new_key: bool = False) -> dict[str, Any]:
        """`count` round trips to `name`, one every `interval` seconds, over the path this
        tunnel finds to it (no local port is opened). As each answer arrives or times out,
        `on_reply(seq, rtt or None, path)` and `on_result(seq, PingResult)` (which also says
        where a lost ping was lost) run. Returns the summary `ptunnel ping --json` shows."""
        name = check_name(name)
        connection = await self.reach(name, accept_new_key=accept_new_key)
        loop = asyncio.get_running_loop()
        results: list[PingResult] = []
        try:
            for seq in range(count):
                started = loop.time()
                result = await connection.round_trip(timeout=max(interval, 0.2))
                results.append(result)
                if on_reply is not None:
                    on_reply(seq, result.rtt, result.path)
                if on_result is not None:
                    on_result(seq, result)
                if seq + 1 < count:  # a ping lost at once (no session, no path) waits too
                    await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
            assert connection.link is not None
            peer = connection.link.status(monotonic())
        finally:
            await connection.close()
        rtts = [r.rtt * 1e3 for r in results if r.rtt is not None]
        return {
            "name": name, "sent": count, "received": len(rtts), "path": peer["path"],
            "direct": peer["direct"], "state": peer["state"],
            "rtt_ms": {"min": min(rtts), "median": statistics.median(rtts), "max": max(rtts)}
            if rtts else None,
            "lost": {reason: sum(r.lost == reason for r in results)
                     for reason in (NO_SESSION, NO_PATH, NO_ANSWER)},
            "replies": [r.as_dict(seq) for seq, r in enumerate(results)],
            "candidates": peer["candidates"],
        }

    def forwards(self) -> list[Exposed | Connection]:
        """Every expose and every connect with a local port (not the pings' connections)."""
        return [*self.exposed, *(c for c in self.connections if c.listen is not None)]

    def find_forwards(self, what: str) -> list[Exposed | Connection]:
        """The forwards `what` names: a name, or a port (a connect's local port, an expose's
        target port)."""
        if what.isdigit():
            return [f for f in self.forwards() if f.port == int(what)]
        try:
            name = normalize_name(what)
        except ValueError:
            return []
        return [f for f in self.forwards() if f.name == name]

    def status(self) -> dict[str, Any]:
        status = self.node.status()
        status["exposed"] = [e.stats() for e in self.exposed]
        status["connections"] = [c.stats() for c in self.connections]
        status["forwards"] = [forward.stats() for forward in self.forwards()]
        return status

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()
        await self.forwarder.close()
        await self.node.close()
