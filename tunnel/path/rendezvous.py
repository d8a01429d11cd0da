"""The node's side of the rendezvous protocol, sans-IO (`rendezvous/protocol.py` has the wire).

Same interface as every ptunnel state machine: `receive_datagram(data, addr, now)`,
`datagrams_to_send()`, `get_timer()`, `handle_timer(now)`, `next_event()`.

How it behaves:
- Every signed request needs a cookie. The client fetches one (COOKIE_REQUEST), keeps it for
  `CLIENT_COOKIE_MAX_AGE`, and adopts any fresh cookie the server sends back instead of an answer
  (expired cookie, server restarted with another secret, address changed behind a NAT).
- Every request is a Noise X message to the server's static key that proves ours, and every
  reply or push must be a Noise K message from that key to ours (`tunnel/path/sealing.py`):
  nobody else can write one, and nobody on the path can read names, keys or addresses.
- The server's key comes from the caller (a join code, the config, or a pin). Without one the
  client takes the key the first COOKIE carries and reports `ServerKeyLearned` so the shell pins
  it; a COOKIE with any other key than the one in use is reported once as `ServerKeyChanged`
  (requests sealed to the old key then go unanswered: the shell refuses to go on).
- Each transmission is signed anew with the next counter, so a retransmission is never mistaken
  for a replay. If the server says the counter is stale (this node restarted), the client jumps
  past the server's value and retries at once, but never to `COUNTER_LIMIT` or beyond: such a
  reply is dropped, whatever its value.
- Each request has its own secret nonce, sealed inside; replies must carry it. Pushes (JOINED,
  LEFT, an incoming INTRODUCED) must carry the nonce of one of our recent registrations, and a
  push already seen (same Noise ephemeral) is dropped as a replay. A COOKIE sent instead of an
  answer must echo the request's clear echo. Anything else is dropped.
- Registration refreshes every `REFRESH_INTERVAL`; each REGISTERED carries the full member list,
  so a lost JOINED/LEFT push is repaired by the next refresh (diffed into PeerJoined/PeerLeft).
- Requests are retransmitted with exponential backoff (from `RETRY_INITIAL`, or twice the
  slowest of the server's recent answer times if that is longer; every wait stretched by a
  random `RETRY_JITTER`), each time with a cookie request beside
  (its COOKIE shows the server's key: a changed key is noticed at the first retry); after
  `UNREACHABLE_AFTER` unanswered attempts the client reports `ServerUnreachable` once and keeps
  trying (the registration forever, LIST/CONNECT until `GIVE_UP_AFTER`).
- An INTRODUCED carries our relay token toward that peer; `wrap_relay` puts it (as the grant
  id and a MAC of the datagram) on every datagram we relay to the peer. Without a token there
  is nothing to relay with: the server forwards only what a token proves.
- REFUSED TRY_LATER (the server cannot reach its store, e.g. Redis restarting) is temporary:
  the registration goes on (sent again after a backoff; the first answer to `start()` is also
  reported as `RegistrationRefused`, so a caller waiting on it can say why), and a CONNECT is
  refused with that reason (its caller asks again).
- Several servers of one deployment (one Redis, one key) may be given: `server_addr` first, then
  `fallbacks`. When the server in use is silent, not just slow: our registration (or its
  cookie request) has gone unanswered `FAILOVER_AFTER` times in a row (1 + 2 + 4 = 7 s for a
  server that answered promptly, longer for one seen answering late) and nothing at all came
  from it for `FAILOVER_QUIET`, the client moves to the next one (after the last, the first
  again): a fresh cookie, the registration and every pending
  request sent there, `ServerChanged` reported, and `Registered` once it is in. Nothing else
  changes: counters, relay tokens and names live in the shared store, and established paths
  between nodes never needed the server. The server's key is the deployment's: a server with
  another key is reported as `ServerKeyChanged`, as for one server.
- `health(now)` says what `ptunnel status` shows: whether we are registered (and under which
  names), when the server last answered anything, and how long it has left a request waiting.
  A registration the server acknowledged does not count once the server has been silent for
  `SILENT_AFTER`: whatever it held for us then, we cannot tell.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from rendezvous import protocol as p
from rendezvous.protocol import CLIENT_COOKIE_MAX_AGE, Endpoint, Peer
from tunnel.addresses import format_endpoint
from tunnel.keys.netkeys import fingerprint, network_id, network_signing_key, short_network_id
from tunnel.path.sealing import open_reply, seal_request
from tunnel.session.crypto import public_key
from tunnel.session.oneway import usable_static

log = logging.getLogger(__name__)

# The server expires a registration after 90 s of silence; refreshing every 20 s survives three
# lost refreshes, and also keeps the NAT mapping to the server alive (many expire UDP at 30 s).
REFRESH_INTERVAL = 20.0  # seconds
RETRY_INITIAL: Final = 1.0  # seconds; well above a rendezvous RTT, small enough for a snappy start
RETRY_MAX: Final = 16.0  # seconds; capped so a returning server is found within a refresh or so
# Each retransmission timer is stretched by a random 0-10 %: nodes that lost their answers in
# one burst (a server's full socket buffer) do not all come back in the same millisecond.
RETRY_JITTER: Final = 0.1
# A server that answers, only late (working through a backlog), is slow, not gone: the first
# retransmission waits at least ANSWER_TIME_FACTOR times the slowest of its last ANSWER_SAMPLES
# answer times (from a request's first transmission to its answer), so a slow server is not
# sent copies it has yet to read, and its answers arrive before the failover count runs out.
ANSWER_SAMPLES: Final = 4
ANSWER_TIME_FACTOR: Final = 2.0
UNREACHABLE_AFTER: Final = 4  # attempts (1 + 2 + 4 + 8 = 15 s of silence)
# With other servers to go to: three unanswered attempts (sent at 0, 1 and 3 s, the last waited
# for until 7 s, plus jitter) with nothing at all heard from the server meanwhile are no lost
# datagram but a server that is gone; seconds, not a refresh interval. Longer for a server that
# has been answering slowly (above).
FAILOVER_AFTER: Final = 3  # attempts
FAILOVER_QUIET: Final = float(sum(RETRY_INITIAL * 2**i for i in range(FAILOVER_AFTER)))  # 7 s
# 7.7 s: the most, for a prompt server
FAILOVER_SILENCE: Final = FAILOVER_QUIET * (1 + RETRY_JITTER)
GIVE_UP_AFTER: Final = 6  # attempts for LIST/CONNECT; the registration never gives up
# The server answers within a round trip and the client sends at 0, 1 and 3 s: a request left
# unanswered this long means the server is down or UDP to it is blocked, not one lost datagram.
SILENT_AFTER: Final = 5.0  # seconds
RECENT_REGISTRATIONS: Final = 3  # nonces of our latest REGISTERs that pushes may echo
MAX_COOKIE_RESENDS: Final = 2  # per request; later ones wait for the retransmission timer
# Relay tokens kept, one per peer we were introduced to; the oldest goes first. A token is kept
# past its peer's PeerLeft: the server judges whether it still holds, and a re-registered peer
# is introduced again anyway.
MAX_RELAY_TOKENS: Final = 4096
# Pushes remembered to drop replays: a registration nonce lives about 3 refreshes (60 s), and a
# network's pushes in that time are a few per member.
SEEN_PUSHES: Final = 1024
TRY_LATER_REASON: Final = (
    "the rendezvous cannot reach its database right now (nothing was changed); "
    "try again in a minute, or ask its operator if this lasts"
)


# --- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Registered:
    public_endpoint: Endpoint
    peers: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class PeerJoined:
    peer: Peer


@dataclass(frozen=True, slots=True)
class PeerLeft:
    static: bytes
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Introduced:
    peer_name: str
    peer_static: bytes
    public_endpoint: Endpoint
    lan_candidates: tuple[Endpoint, ...]
    initiated_by_us: bool


@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    reason: str
    holder_fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class ListReceived:
    peers: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class ListRefused:
    """The server refused a LIST (a network it does not serve); `reason` in words."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectRefused:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class ServerUnreachable:
    attempts: int


@dataclass(frozen=True, slots=True)
class ServerChanged:
    """The server in use stopped answering; the client now registers at `server`."""

    previous: Endpoint
    server: Endpoint


@dataclass(frozen=True, slots=True)
class ServerKeyLearned:
    """No key was given for this server: this one, from its first COOKIE, is now in use (trust
    on first use). The shell pins it."""

    key: bytes


@dataclass(frozen=True, slots=True)
class ServerKeyChanged:
    """The server offered another key than the one in use (pinned or configured)."""

    pinned: bytes
    offered: bytes


@dataclass(frozen=True, slots=True)
class CookieReceived:
    """The server told us our public endpoint (also what netcheck uses)."""

    public_endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class Health:
    """The server as this client sees it at one `now` (durations in seconds)."""

    registered: bool  # acknowledged, and the server has not gone silent since
    names: tuple[str, ...]  # the names of that registration (empty when not registered)
    last_answer: float | None  # seconds since the server last answered anything (None: never)
    unanswered: float | None  # seconds a request has waited with no answer at all (None: none)


Event = (Registered | PeerJoined | PeerLeft | Introduced | RegistrationRefused | ListReceived
         | ListRefused | ConnectRefused | ServerUnreachable | CookieReceived | ServerKeyLearned
         | ServerKeyChanged | ServerChanged)


@dataclass(slots=True)
class _Pending:
    kind: int
    nonce: bytes
    echo: bytes = b""  # in clear in every transmission; a COOKIE sent instead echoes it
    name: str = ""  # CONNECT target
    attempts: int = 0
    deadline: float = 0.0
    pages: dict[int, tuple[Peer, ...]] = field(default_factory=dict)
    observed: Endpoint | None = None
    parked: bool = False  # CONNECT waiting for our re-registration (NOT_REGISTERED)
    reregistered: bool = False  # ... which is tried once per CONNECT
    cookie_resends: int = 0  # immediate resends on a fresh cookie (capped: no ping-pong)
    explicit: bool = False  # REGISTER asked for by start(): always answered with `Registered`
    asked_at: float = 0.0  # when the request was made (its first transmission, or cookie wait)
    names: tuple[str, ...] = ()  # REGISTER: the names its latest transmission carried
    later: int = 0  # TRY_LATER answers so far (they set the backoff: answers reset `attempts`)
    first_sent: float | None = None  # its first transmission to the server in use


class RendezvousClient:
    def __init__(
        self,
        network_secret: bytes,
        static_private: bytes,
        names: tuple[str, ...] | list[str],
        lan_candidates: tuple[Endpoint, ...] | list[Endpoint],
        server_addr: Endpoint,
        server_key: bytes | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        counter_start: int = 0,
        fallbacks: tuple[Endpoint, ...] | list[Endpoint] = (),
        refresh_interval: float | None = None,
    ) -> None:
        """`static_private`: this node's X25519 key. `server_key`: the server's static key, or
        None to take it from the server's first COOKIE (`ServerKeyLearned`). `counter_start`:
        pass e.g. wall-clock microseconds so a restarted node does not need a STALE_COUNTER
        round trip; any value below 2^62 works. `fallbacks`: the deployment's other servers, in
        the order to try them when the one in use stops answering. `refresh_interval`: seconds
        between registrations (default `REFRESH_INTERVAL`; the load test sets the issue's 25)."""
        if not 0 <= counter_start < p.COUNTER_LIMIT // 2:
            raise ValueError(f"counter_start must be 0 to 2^62, not {counter_start}")
        if server_key is not None and not usable_static(server_key):
            raise ValueError("the rendezvous key is not a usable X25519 public key")
        self.network = network_id(network_secret)
        self._signer = network_signing_key(network_secret)
        self._static_private = static_private
        self.static = public_key(static_private)
        self.server_key = server_key
        self._key_changes_reported: set[bytes] = set()
        self._seen_pushes: deque[bytes] = deque(maxlen=SEEN_PUSHES)
        self.names = tuple(names)
        for name in self.names:
            if not p.valid_name(name):
                raise ValueError(f"invalid name {name!r}: use a-z, 0-9, '.', '_', '-'")
        self.lan = tuple(lan_candidates)
        self.servers = (server_addr, *fallbacks)
        for addr in self.servers:
            try:
                ipaddress.ip_address(addr[0])
            except ValueError:
                # Replies are matched by source address, so a host name would never match.
                raise ValueError(f"rendezvous address {addr[0]!r} must be an IP address; "
                                 "resolve it first (tunnel.node.netcheck.resolve)") from None
        self.server = server_addr
        self._rng = rng
        self._counter = counter_start
        self._cookie: bytes | None = None
        self._cookie_at = 0.0
        self._cookie_req: _Pending | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._outbox: list[tuple[bytes, Endpoint]] = []
        self._events: deque[Event] = deque()
        self._registering = False  # start() called and not refused / left
        self._next_refresh: float | None = None
        self._refresh_interval = refresh_interval
        self._recent: deque[bytes] = deque(maxlen=RECENT_REGISTRATIONS)
        self._reported_unreachable = False
        self._answer_times: deque[float] = deque(maxlen=ANSWER_SAMPLES)  # of the server in use
        self._last_heard: float | None = None  # any authentic datagram from the server in use
        self._store_down = False  # TRY_LATER seen and logged since the last registration
        self.registered = False
        self.registered_names: tuple[str, ...] = ()  # of the last acknowledged registration
        self.last_answer: float | None = None  # `now` of the latest valid reply or push
        self.public_endpoint: Endpoint | None = None
        self.peers: dict[bytes, Peer] = {}
        self.dropped = 0  # malformed or unsolicited datagrams from the server address
        self._relay_tokens: dict[bytes, bytes] = {}  # peer static -> our token toward it

    # --- requests ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Register (and keep refreshing) our names with the server.

        Call again after changing `names`: the new set is registered at once, and `Registered`
        (or `RegistrationRefused`) follows. Periodic refreshes emit `Registered` only when the
        public endpoint changed, and PeerJoined/PeerLeft for differences in the member list.
        """
        self._registering = True
        self._request(p.REGISTER, now, explicit=True)

    def request_list(self, now: float) -> None:
        self._request(p.LIST, now)

    def request_connect(self, name: str, now: float) -> None:
        if not p.valid_name(name):
            raise ValueError(f"invalid name {name!r}")
        self._request(p.CONNECT, now, name)

    def request_cookie(self, now: float) -> None:
        """Ask for a cookie now; answered with `CookieReceived` (our public endpoint)."""
        self._cookie = None
        self._send_cookie_request(now)

    def leave(self, now: float) -> None:
        """Deregister once (best effort, no retransmission) and stop refreshing."""
        self._registering = False
        self._next_refresh = None
        self._pending = {k: v for k, v in self._pending.items() if v.kind != p.REGISTER}
        if self.registered and self._cookie_valid(now):
            self._transmit(_Pending(p.LEAVE, self._rng(p.NONCE_SIZE), self._rng(p.ECHO_SIZE)), now)
        self.registered = False
        self.registered_names = ()

    @property
    def awaiting_registration(self) -> bool:
        """A REGISTER (a refresh, or one `start()` asked for) is waiting for its answer."""
        return any(q.kind == p.REGISTER for q in self._pending.values())

    def wrap_relay(self, dest_static: bytes, datagram: bytes) -> bytes | None:
        """The RELAY_TO envelope for `datagram` to that peer; None when the server never gave
        us a relay token toward it (no introduction yet)."""
        token = self._relay_tokens.get(dest_static)
        return None if token is None else p.encode_relay_to(token, datagram)

    def unwrap_relay(self, data: bytes) -> tuple[bytes, bytes] | None:
        return p.decode_relay_from(data)

    def health(self, now: float) -> Health:
        """Registered or not, and how recently the server answered (for `ptunnel status`)."""
        asked = [q.asked_at for q in self._pending.values() if not q.parked]
        if self._cookie_req is not None:
            asked.append(self._cookie_req.asked_at)
        unanswered: float | None = None
        if asked:
            # Silence counts from the oldest request still waiting, or from the latest answer if
            # the server answered something since: a slow reply to one request is no outage.
            since = min(asked)
            if self.last_answer is not None:
                since = max(since, self.last_answer)
            unanswered = max(0.0, now - since)
        registered = self.registered and (unanswered is None or unanswered < SILENT_AFTER)
        return Health(
            registered=registered,
            names=self.registered_names if registered else (),
            last_answer=None if self.last_answer is None else max(0.0, now - self.last_answer),
            unanswered=unanswered,
        )

    # --- sans-IO interface ----------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        # Asked after every flush of the node (a hot path): compared in place, nothing built.
        earliest = self._next_refresh
        if self._cookie_req is not None and (earliest is None
                                             or self._cookie_req.deadline < earliest):
            earliest = self._cookie_req.deadline
        for query in self._pending.values():
            if earliest is None or query.deadline < earliest:
                earliest = query.deadline
        return earliest

    def handle_timer(self, now: float) -> None:
        if self._next_refresh is not None and now >= self._next_refresh:
            self._next_refresh = None
            if not any(q.kind == p.REGISTER for q in self._pending.values()):
                self._request(p.REGISTER, now)
        cookie_req = self._cookie_req
        if cookie_req is not None and now >= cookie_req.deadline and self._note_attempt(
                cookie_req, now):
            self._send_cookie_request(now)
        for q in list(self._pending.values()):
            if q.nonce not in self._pending:
                continue  # sent to the next server by a failover in this loop
            if now >= q.deadline and self._note_attempt(q, now):
                self._send(q, now)
                if self._cookie_req is None:
                    # Silence: a server with another key drops our requests unanswered; a
                    # COOKIE shows its key (and a fresh cookie, should ours be the problem).
                    self._send_cookie_request(now)

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> bool:
        """Consume a rendezvous datagram; False when it is not ours (other types or senders)."""
        if not data or data[0] not in p.RENDEZVOUS_TYPES or _norm(addr) != _norm(self.server):
            return False
        msg: p.Reply | None = None
        if data[0] == p.COOKIE:
            msg = p.decode_reply(data)
        elif self.server_key is not None:
            msg = open_reply(data, self._static_private, self.static, self.server_key)
        if msg is None:
            self.dropped += 1
            return True
        if isinstance(msg, p.CookieReply):
            self._on_cookie(msg, now)
        elif isinstance(msg, p.Joined | p.Left) or (
            isinstance(msg, p.Introduced) and msg.nonce not in self._pending
        ):
            ephemeral = data[1 : 1 + p.KEY_SIZE]
            if ephemeral in self._seen_pushes:
                self.dropped += 1  # a replayed push (only an on-path observer has one)
                return True
            self._seen_pushes.append(ephemeral)
            self._last_heard = now
            self._on_push(msg, now)
        else:
            # Sealed by the server to us: it is there, even if this answers an older request.
            self._last_heard = now
            q = self._pending.get(msg.nonce)
            if q is None:
                self.dropped += 1
                return True
            if q.first_sent is not None and not q.pages:
                self._answer_times.append(now - q.first_sent)
            self._reachable(now)
            self._on_reply(q, msg, now)
        return True

    # --- replies -------------------------------------------------------------------------------
    def _on_cookie(self, msg: p.CookieReply, now: float) -> None:
        ours = self._cookie_req is not None and msg.nonce == self._cookie_req.nonce
        if not ours and not any(q.echo == msg.nonce for q in self._pending.values()):
            self.dropped += 1
            return
        if not usable_static(msg.server_key):
            self.dropped += 1  # nothing could be sealed to it: not a server's key
            return
        if self.server_key is None:
            self.server_key = msg.server_key
            # The pin store logs the pin itself (INFO): this is the detail of where it came from.
            log.debug("rendezvous %s has key %s (first use)", format_endpoint(self.server),
                      fingerprint(msg.server_key))
            self._events.append(ServerKeyLearned(msg.server_key))
        elif msg.server_key != self.server_key and (
            msg.server_key not in self._key_changes_reported
        ):
            self._key_changes_reported.add(msg.server_key)
            self._events.append(ServerKeyChanged(self.server_key, msg.server_key))
        self._reachable(now)
        self._cookie, self._cookie_at = msg.cookie, now
        self._cookie_req = None
        self._events.append(CookieReceived(msg.observed))
        for q in list(self._pending.values()):
            # Resend at once with the new cookie, but only a couple of times per request: a
            # server that keeps refusing our cookies must not turn into a packet ping-pong.
            if not q.parked and q.cookie_resends < MAX_COOKIE_RESENDS:
                q.cookie_resends += 1
                self._transmit(q, now)

    def _on_reply(self, q: _Pending, msg: p.Reply, now: float) -> None:
        if isinstance(msg, p.RegisterReply) and q.kind == p.REGISTER:
            q.observed = msg.observed
            q.pages[msg.page] = msg.peers
            if len(q.pages) == msg.pages:
                del self._pending[q.nonce]
                self._registration_done(q, msg.observed, now)
        elif isinstance(msg, p.Listed) and q.kind == p.LIST:
            q.pages[msg.page] = msg.peers
            if len(q.pages) == msg.pages:
                del self._pending[q.nonce]
                self._events.append(ListReceived(_join_pages(q.pages)))
        elif isinstance(msg, p.Introduced) and q.kind == p.CONNECT:
            del self._pending[q.nonce]
            self._keep_relay_token(msg)
            self._events.append(Introduced(q.name, msg.static, msg.endpoint, msg.lan, True))
        elif isinstance(msg, p.Refused):
            self._on_refused(q, msg, now)
        else:
            self.dropped += 1

    def _on_refused(self, q: _Pending, msg: p.Refused, now: float) -> None:
        if msg.code == p.TRY_LATER:
            self._on_try_later(q, now)
            return
        if msg.code == p.STALE_COUNTER:
            if msg.counter >= p.COUNTER_LIMIT - 1:
                # No counter we may send is above it: a server that says so is broken (ours
                # refuses such counters). Drop it; the retransmission timer tries again.
                log.warning("rendezvous %s:%d reported a stale counter out of range; ignored",
                            *self.server)
                self.dropped += 1
                return
            self._counter = max(self._counter, msg.counter)
            self._transmit(q, now)
            return
        if q.kind == p.CONNECT and msg.code == p.NOT_REGISTERED and self._registering and (
            not q.reregistered
        ):
            # Our NAT mapping changed (or the server lost us) since the last refresh: register
            # from the current address now and send the CONNECT again once that is done.
            q.parked = q.reregistered = True
            q.deadline = now + RETRY_MAX
            if not any(r.kind == p.REGISTER for r in self._pending.values()):
                self._request(p.REGISTER, now)
            return
        del self._pending[q.nonce]
        if q.kind == p.REGISTER:
            self._registering = False
            self.registered = False
            self.registered_names = ()
            if msg.code == p.NAME_TAKEN:
                fp = fingerprint(msg.holder)
                reason = f"name {msg.name!r} is held by another node ({fp}) of this network"
                self._events.append(RegistrationRefused(reason, fp))
            elif msg.code == p.NETWORK_REFUSED:
                self._events.append(RegistrationRefused(self._network_refused()))
            elif msg.code == p.NETWORK_FULL:
                self._events.append(RegistrationRefused(
                    f"this network already has {msg.cap} nodes registered, the most this "
                    "rendezvous allows; stop one, or ask its operator to raise max_members"))
            else:
                self._events.append(RegistrationRefused(f"refused (code {msg.code})"))
        elif q.kind == p.CONNECT:
            reason = {
                p.UNKNOWN_PEER: f"no active node named {q.name!r} in this network",
                p.NOT_REGISTERED: "this node is not registered with the rendezvous yet",
                p.NETWORK_REFUSED: self._network_refused(),
            }.get(msg.code, f"refused (code {msg.code})")
            self._events.append(ConnectRefused(q.name, reason))
        elif q.kind == p.LIST:
            self._events.append(ListRefused(
                self._network_refused() if msg.code == p.NETWORK_REFUSED
                else f"refused (code {msg.code})"))

    def _on_try_later(self, q: _Pending, now: float) -> None:
        """The server cannot reach its store and did nothing. A CONNECT is refused with that
        reason (its caller asks again); a REGISTER or LIST is sent again after a backoff, and
        the registration goes on: an outage of the server's store never ends it."""
        q.later += 1
        if not self._store_down:
            self._store_down = True
            log.warning("rendezvous %s: %s", format_endpoint(self.server), TRY_LATER_REASON)
        if q.kind == p.CONNECT or (q.kind == p.LIST and q.later >= GIVE_UP_AFTER):
            del self._pending[q.nonce]
            if q.kind == p.CONNECT:
                self._events.append(ConnectRefused(q.name, TRY_LATER_REASON))
            return
        if q.kind == p.REGISTER and q.explicit and q.later == 1:
            self._events.append(RegistrationRefused(TRY_LATER_REASON))
        q.deadline = now + self._backoff(q.later)

    def _network_refused(self) -> str:
        return (f"this rendezvous does not serve network {short_network_id(self.network)}; "
                "ask its operator to add that id to the server's --networks file")

    def _registration_done(self, q: _Pending, observed: Endpoint, now: float) -> None:
        self._store_down = False
        peers = {peer.static: peer for peer in _join_pages(q.pages) if peer.static != self.static}
        self._recent.append(q.nonce)
        first = q.explicit or not self.registered or observed != self.public_endpoint
        if first:
            self._events.append(Registered(observed, tuple(peers.values())))
        else:
            for static, peer in peers.items():
                old = self.peers.get(static)
                if old is None or (old.endpoint, old.names) != (peer.endpoint, peer.names):
                    self._events.append(PeerJoined(peer))
            for static, gone in self.peers.items():
                if static not in peers:
                    self._events.append(PeerLeft(static, gone.names))
        self.registered = True
        self.registered_names = q.names
        self.public_endpoint = observed
        self.peers = peers
        if self._registering:
            interval = self._refresh_interval
            self._next_refresh = now + (REFRESH_INTERVAL if interval is None else interval)
        for parked in [r for r in self._pending.values() if r.parked]:
            parked.parked = False
            self._transmit(parked, now)

    def _on_push(self, msg: p.Joined | p.Left | p.Introduced, now: float) -> None:
        if msg.nonce not in self._recent or not self.registered:
            self.dropped += 1
            return
        self.last_answer = now
        if isinstance(msg, p.Joined):
            if msg.peer.static != self.static:
                self.peers[msg.peer.static] = msg.peer
                self._events.append(PeerJoined(msg.peer))
        elif isinstance(msg, p.Left):
            old = self.peers.pop(msg.static, None)
            if old is not None:
                self._events.append(PeerLeft(msg.static, old.names))
        else:
            name = msg.names[0] if msg.names else ""
            self._keep_relay_token(msg)
            self._events.append(Introduced(name, msg.static, msg.endpoint, msg.lan, False))

    def _keep_relay_token(self, msg: p.Introduced) -> None:
        self._relay_tokens.pop(msg.static, None)  # re-inserted last: the newest is kept longest
        if len(self._relay_tokens) >= MAX_RELAY_TOKENS:
            del self._relay_tokens[next(iter(self._relay_tokens))]
        self._relay_tokens[msg.static] = msg.relay_token

    # --- sending -------------------------------------------------------------------------------
    def _request(self, kind: int, now: float, name: str = "", explicit: bool = False) -> None:
        q = _Pending(kind, self._rng(p.NONCE_SIZE), self._rng(p.ECHO_SIZE), name,
                     explicit=explicit, asked_at=now)
        self._pending[q.nonce] = q
        self._send(q, now)

    def _send(self, q: _Pending, now: float) -> None:
        if self._cookie_valid(now) and self.server_key is not None:
            self._transmit(q, now)
        else:
            # Wait for the cookie; the request goes out when it arrives (or on its own retry).
            q.deadline = now + self._backoff(q.attempts)
            if self._cookie_req is None:
                self._send_cookie_request(now)

    def _transmit(self, q: _Pending, now: float) -> None:
        assert self._cookie is not None and self.server_key is not None
        self._counter += 1
        names = (q.name,) if q.kind == p.CONNECT else self.names if q.kind == p.REGISTER else ()
        if q.kind == p.REGISTER:
            q.names = names
        lan = self.lan if q.kind == p.REGISTER else ()
        req = p.Request(q.kind, self.network, self.static, self._counter, q.nonce, self._cookie,
                        names, lan)
        data = seal_request(req, q.echo, self._signer, self._static_private, self.server_key,
                            self._rng(32))
        self._outbox.append((data, self.server))
        if q.first_sent is None:
            q.first_sent = now
        q.deadline = now + self._backoff(q.attempts)

    def _send_cookie_request(self, now: float) -> None:
        if self._cookie_req is None:
            self._cookie_req = _Pending(p.COOKIE_REQUEST, self._rng(p.NONCE_SIZE), asked_at=now)
        q = self._cookie_req
        self._outbox.append((p.encode_cookie_request(p.CookieRequest(q.nonce)), self.server))
        q.deadline = now + self._backoff(q.attempts)

    def _cookie_valid(self, now: float) -> bool:
        return self._cookie is not None and now - self._cookie_at < CLIENT_COOKIE_MAX_AGE

    def _note_attempt(self, q: _Pending, now: float) -> bool:
        """Count a timed-out attempt; False when the request is abandoned (or all were moved to
        the next server: the caller must not send this one again)."""
        q.attempts += 1
        if (q.kind in (p.REGISTER, p.COOKIE_REQUEST) and q.attempts >= FAILOVER_AFTER
                and len(self.servers) > 1 and self._registering and self._silent(now)):
            self._fail_over(now)
            return False
        if q.attempts >= UNREACHABLE_AFTER and not self._reported_unreachable:
            self._reported_unreachable = True
            log.info("rendezvous %s does not answer", format_endpoint(self.server))
            self._events.append(ServerUnreachable(q.attempts))
        if q.kind in (p.LIST, p.CONNECT) and q.attempts >= GIVE_UP_AFTER:
            self._pending.pop(q.nonce, None)
            return False
        if q.kind == p.COOKIE_REQUEST and not self._pending and not self._registering:
            self._cookie_req = None
            return False
        return True

    def _fail_over(self, now: float) -> None:
        """Go to the next server: a cookie from it, then the registration and every pending
        request. The registration's attempts start again (the new server deserves its own
        three tries); a LIST's or CONNECT's keep counting toward `GIVE_UP_AFTER`, so one asked
        while every server is down is still refused in the end."""
        previous = self.server
        self.server = self.servers[(self.servers.index(previous) + 1) % len(self.servers)]
        log.warning("rendezvous %s does not answer; registering at %s",
                    format_endpoint(previous), format_endpoint(self.server))
        self._events.append(ServerChanged(previous, self.server))
        self._cookie = None
        self._cookie_req = None
        self.registered = False  # not there yet; `Registered` follows when it is
        self._reported_unreachable = False
        self._answer_times.clear()  # the new server's pace is its own
        self._last_heard = None
        if not any(q.kind == p.REGISTER for q in self._pending.values()):
            self._pending_register(now)
        for q in self._pending.values():
            if q.kind == p.REGISTER:
                q.attempts = 0
            q.cookie_resends = 0
            q.first_sent = None
            q.asked_at = now
            q.deadline = now + self._backoff(0)
        self._send_cookie_request(now)

    def _pending_register(self, now: float) -> None:
        q = _Pending(p.REGISTER, self._rng(p.NONCE_SIZE), self._rng(p.ECHO_SIZE), asked_at=now)
        self._pending[q.nonce] = q

    def _silent(self, now: float) -> bool:
        """Nothing at all heard from the server in use for `FAILOVER_QUIET`: gone, not slow."""
        return self._last_heard is None or now - self._last_heard >= FAILOVER_QUIET

    def _reachable(self, now: float) -> None:
        self.last_answer = self._last_heard = now
        self._reported_unreachable = False
        if self._cookie_req is not None:
            self._cookie_req.attempts = 0
        for q in self._pending.values():
            q.attempts = 0

    def _backoff(self, attempts: int) -> float:
        """The wait before the next try: doubling from the retransmission timer (longer for a
        server seen answering slowly), capped, stretched by a random jitter."""
        slowest = max(self._answer_times, default=0.0)
        first = max(RETRY_INITIAL, ANSWER_TIME_FACTOR * slowest)
        jitter = 1.0 + RETRY_JITTER * int.from_bytes(self._rng(2), "big") / 65_536
        # The exponent is capped: a registration retries for as long as the server is away,
        # and 2**1024 no longer converts to a float.
        return min(RETRY_MAX, first * 2.0 ** min(attempts, 16)) * jitter


def _join_pages(pages: dict[int, tuple[Peer, ...]]) -> tuple[Peer, ...]:
    return tuple(peer for i in sorted(pages) for peer in pages[i])


def _norm(addr: tuple[object, ...]) -> tuple[str, int]:
    host = str(addr[0])
    if host.startswith("::ffff:"):
        host = host[7:]
    return host, int(addr[1])  # type: ignore[call-overload]
