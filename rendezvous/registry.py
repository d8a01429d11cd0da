"""The rendezvous server's logic, pure: `Registry.handle(datagram, addr, now) -> list[Send]`.

Rules, in the order a datagram meets them (first failure drops it, or answers as stated):

1. Per-source-IP rate limit (`ratelimit.SOURCE_RATE`, a fixed table: no memory per source);
   relay envelopes go to `relay.RelayPolicy`.
2. COOKIE_REQUEST: answer COOKIE (cookie + observed endpoint + the server's static key).
   Stateless, ≤ the request's size.
3. Request with a missing/expired/foreign-address cookie (read from its clear header): answer a
   fresh COOKIE echoing the header's echo (smaller than any request). Still no state and no
   Diffie-Hellman: this is the return-routability proof.
4. The Noise X message must open with the server's static key (`tunnel/path/sealing.py`); that
   proves the sender's static key, so every request acts for its sender's own key only. Then
   the network signature must verify with the network id as Ed25519 key (membership); else
   drop. The server never needs the network secret.
5. The network must be admitted (`admission.Admission`, `--networks`): else REFUSED
   NETWORK_REFUSED, before the store is touched.
6. A counter ≥ `protocol.COUNTER_LIMIT` is refused (BAD_REQUEST); otherwise it must exceed the
   node's last one (kept in the store): else REFUSED STALE_COUNTER. With the cookie this stops
   replays from other addresses (3) and from the same address (6).
7. REGISTER: names held by another live key of the network are refused with NAME_TAKEN and the
   holder's key, and a new member of a network at `max_members` with NETWORK_FULL; otherwise
   the member is stored for `REGISTRATION_TTL`, answered with REGISTERED (its observed endpoint
   and the other live members), and, if new or moved, announced to the others with JOINED. LIST
   answers LISTED. CONNECT sends INTRODUCED to both sides at once, each with its relay token
   toward the other (`relay.RelayPolicy.grant`). LEAVE removes the sender's own registration and
   announces LEFT.
8. `handle_timer` expires silent members and announces LEFT.
9. A store that cannot be reached (`store.StoreUnavailable`, e.g. Redis down) turns any
   request that passed 1-6 into REFUSED TRY_LATER: not silence, and never an answer from data
   the server cannot check. A sweep it interrupts is done by the next one.

Every reply and push is a Noise K message from the server's static key to the recipient's
proven key: only this server can write it, only that node can read it.

`now` here is wall-clock seconds (`time.time()`), not the monotonic clock the node uses: the
store is shared by several servers and survives restarts, so its timestamps need a common scale.
Networks are isolated because every lookup is keyed by the network id that signed the request.

Several servers may share one store (one network across servers). Every member records the
`server_id` of the server it registered at, because its NAT lets only that server in: a push to
a member of another server (its INTRODUCED, JOINED, LEFT; a relayed packet to it) is a `Send`
whose `via` names that server, and the shell hands it to that server (`rendezvous.pushbus`,
Redis pub/sub), already sealed. A `Send` with `via == ""` leaves from this server.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rendezvous import protocol as p
from rendezvous.admission import OPEN, Admission
from rendezvous.cookies import SECRET_SIZE, CookieJar
from rendezvous.protocol import Endpoint
from rendezvous.ratelimit import (
    RELAY_NETWORK_RATE,
    RELAY_RATE,
    RELAY_TOTAL_RATE,
    SOURCE_BURST,
    SOURCE_RATE,
    SourceRateLimiter,
)
from rendezvous.relay import RelayPolicy
from rendezvous.store import Member, RequestCounter, Store, StoreUnavailable
from tunnel.path.sealing import open_request, seal_reply
from tunnel.session.crypto import public_key
from tunnel.session.noise import NoiseError

log = logging.getLogger(__name__)

# Nodes refresh every 20 s (`tunnel.path.rendezvous.REFRESH_INTERVAL`); 90 s survives three lost
# refreshes plus jitter, and UDP NAT mappings (often 30 s) are kept alive by the refreshes.
REGISTRATION_TTL = 90.0  # seconds
# A replayed request needs a valid cookie (≤ 120 s old), so counters older than that are moot.
COUNTER_KEEP = 300.0  # seconds
SWEEP_INTERVAL = 5.0  # seconds; expiry is announced at most this late


@dataclass(frozen=True, slots=True)
class Send:
    """Effect: send `data` to `addr` from the server's main socket (or the receiving one), or,
    when `via` names another server, from that one's."""

    data: bytes
    addr: Endpoint
    via: str = ""


class Registry:
    def __init__(
        self,
        store: Store,
        rng: Callable[[int], bytes] = os.urandom,
        relay_enabled: bool = True,
        relay_rate: float = RELAY_RATE,
        registration_ttl: float = REGISTRATION_TTL,
        relay_network_rate: float = RELAY_NETWORK_RATE,
        relay_total_rate: float = RELAY_TOTAL_RATE,
        admission: Admission = OPEN,
        static_private: bytes | None = None,
        max_members: int = p.DEFAULT_MAX_MEMBERS,
        server_id: str = "",
    ) -> None:
        """`static_private`: the server's X25519 key (`server.load_or_create_key`; tests may
        leave it to `rng`). `server_id`: this server's name among those sharing the store
        (stored with each member it registers; pushes to another's members carry its id).
        `registration_ttl` is shortened only by lab tests (to see expiry in seconds). Raises
        ValueError for a `max_members` the member lists cannot carry."""
        if not 1 <= max_members <= p.MAX_MEMBERS_LIMIT:
            raise ValueError(f"max_members must be 1-{p.MAX_MEMBERS_LIMIT}, not {max_members}")
        self.store = store
        self.registration_ttl = registration_ttl
        self.admission = admission
        self.max_members = max_members
        self.server_id = server_id
        self._rng = rng
        self.static_private = static_private if static_private is not None else rng(32)
        self.static_public = public_key(self.static_private)
        self.cookies = CookieJar(store.cookie_secret(rng(SECRET_SIZE)))
        self.relay = RelayPolicy(store, relay_enabled, relay_rate, rng(32), relay_network_rate,
                                 relay_total_rate, admission, rng)
        self.stats: Counter[str] = Counter()
        self._by_source = SourceRateLimiter(SOURCE_RATE, SOURCE_BURST, rng(32))
        self._next_sweep = 0.0
        self._handlers: dict[int, Callable[[p.Request, Endpoint, float], list[Send]]] = {
            p.REGISTER: self._handle_register,
            p.LIST: self._handle_list,
            p.CONNECT: self._handle_connect,
            p.LEAVE: self._handle_leave,
        }

    # --- input -----------------------------------------------------------------------------
    def handle(self, data: bytes, addr: Endpoint, now: float) -> list[Send]:
        """One datagram received on the main port."""
        if data and data[0] in p.RELAY_TYPES:
            out = self.relay.forward(data, addr, now)
            if out is None:
                return []
            envelope, dest, server = out
            return [Send(envelope, dest, self._via(server))]
        if not data or data[0] not in p.RENDEZVOUS_TYPES:
            self.stats["malformed"] += 1
            return []
        if not self._by_source.allow(addr[0], now):
            self.stats["source_limited"] += 1
            return []
        if data[0] == p.COOKIE_REQUEST:
            return self._handle_cookie_request(data, addr, now)
        header = p.decode_request_header(data)
        if header is None:
            self.stats["malformed"] += 1
            return []
        if not self.cookies.check(header.cookie, addr, now):
            self.stats["cookie_retry"] += 1
            return [self._cookie_reply(header.echo, addr, now)]
        opened = open_request(header, self.static_private, self.static_public)
        if opened is None:
            self.stats["unopened"] += 1  # forged, damaged, or sealed to another server key
            return []
        req = opened.request
        if not opened.signed:
            self.stats["bad_signature"] += 1
            return []
        if not self.admission.admits(req.network):
            self.stats["network_refused"] += 1
            return self._refuse(req, addr, p.NETWORK_REFUSED)
        if req.counter >= p.COUNTER_LIMIT:
            self.stats["bad_counter"] += 1
            return self._refuse(req, addr, p.BAD_REQUEST)
        try:
            if req.kind in (p.REGISTER, p.CONNECT):
                return self._handlers[req.kind](req, addr, now)  # they check the counter
            last = self.store.bump_counter(req.network, req.static, req.counter,
                                           now + COUNTER_KEEP)
            if last is not None:
                return self._stale(req, addr, last)
            self.stats["accepted"] += 1
            return self._handlers[req.kind](req, addr, now)
        except StoreUnavailable:
            # Neither silence (the node would think us gone) nor an answer from what we last
            # knew (stale): a proven member learns that we cannot serve it now.
            self.stats["store_unavailable"] += 1
            return self._refuse(req, addr, p.TRY_LATER)

    def handle_netcheck(self, data: bytes, addr: Endpoint, now: float) -> list[Send]:
        """One datagram on the netcheck port: only cookie requests (they echo the source)."""
        if not data or data[0] != p.COOKIE_REQUEST:
            self.stats["malformed"] += 1
            return []
        if not self._by_source.allow(addr[0], now):
            self.stats["source_limited"] += 1
            return []
        return self._handle_cookie_request(data, addr, now)

    def get_timer(self) -> float:
        return self._next_sweep

    def handle_timer(self, now: float) -> list[Send]:
        if now < self._next_sweep:
            return []
        self._next_sweep = now + SWEEP_INTERVAL
        self._by_source.sweep(now)
        self.relay.sweep(now)
        out: list[Send] = []
        try:
            for gone in self.store.expire(now):
                log.info("expired %s at %s", _names(gone.names), _endpoint(gone.endpoint))
                self.stats["expired"] += 1
                out += self._announce(gone, p.Left(b"", gone.static), now)
        except StoreUnavailable:
            self.stats["store_unavailable"] += 1  # the next sweep finds what this one missed
        return out

    # --- handlers --------------------------------------------------------------------------
    def _handle_cookie_request(self, data: bytes, addr: Endpoint, now: float) -> list[Send]:
        msg = p.decode_cookie_request(data)
        if msg is None:
            self.stats["malformed"] += 1
            return []
        return [self._cookie_reply(msg.nonce, addr, now)]

    def _handle_register(self, req: p.Request, addr: Endpoint, now: float) -> list[Send]:
        member = Member(req.network, req.static, req.names, addr, req.lan, req.nonce,
                        last_seen=now, expires=now + self.registration_ttl,
                        server=self.server_id)
        # One store call checks the counter (rule 6), the cap and the names, writes, and
        # returns the member list: a refresh is one round trip to Redis.
        result = self.store.register(member, now, self.max_members,
                                     RequestCounter(req.counter, now + COUNTER_KEEP))
        if result.stale_counter is not None:
            return self._stale(req, addr, result.stale_counter)
        self.stats["accepted"] += 1
        if result.full:
            self.stats["network_full"] += 1
            return self._refuse(req, addr, p.NETWORK_FULL, cap=self.max_members)
        if result.conflict_holder:
            self.stats["name_taken"] += 1
            return self._refuse(req, addr, p.NAME_TAKEN, name=result.conflict_name,
                                holder=result.conflict_holder)
        others = [m for m in result.members if m.static != req.static]
        pages = p.paginate([_peer(m, now) for m in others])
        out = [send for i, entries in enumerate(pages)
               for send in self._sealed(p.encode_registered(req.nonce, addr, i, len(pages),
                                                            entries), req.static, addr)]
        prev = result.previous
        if prev is not None and prev.server != self.server_id:
            log.info("%s moved here from server %s", _names(req.names), prev.server or "?")
        if prev is None or prev.endpoint != addr or prev.names != req.names:
            log.info("joined: %s from %s", _names(req.names), _endpoint(addr))
            out += self._announce(member, p.Joined(b"", _peer(member, now)), now, others)
        return out

    def _stale(self, req: p.Request, addr: Endpoint, last: int) -> list[Send]:
        self.stats["stale_counter"] += 1
        # A value stored before counters were bounded is reported as the bound.
        return self._refuse(req, addr, p.STALE_COUNTER, counter=min(last, p.COUNTER_LIMIT - 1))

    def _handle_list(self, req: p.Request, addr: Endpoint, now: float) -> list[Send]:
        pages = p.paginate([_peer(m, now) for m in self.store.members(req.network, now)])
        return [send for i, entries in enumerate(pages)
                for send in self._sealed(p.encode_listed(req.nonce, i, len(pages), entries),
                                         req.static, addr)]

    def _handle_connect(self, req: p.Request, addr: Endpoint, now: float) -> list[Send]:
        # One store call checks the counter (rule 6) and reads both records.
        found = self.store.introduction(req.network, req.static, req.names[0],
                                        RequestCounter(req.counter, now + COUNTER_KEEP), now)
        if found.stale_counter is not None:
            return self._stale(req, addr, found.stale_counter)
        self.stats["accepted"] += 1
        me, target = found.me, found.target
        if me is None or me.endpoint != addr:
            return self._refuse(req, addr, p.NOT_REGISTERED)
        if target is None or target.static == me.static:
            return self._refuse(req, addr, p.UNKNOWN_PEER, name=req.names[0])
        to_target, to_me = self.relay.grant(me, target, now)
        self.stats["introduced"] += 1
        return (
            self._sealed(p.encode_reply(p.Introduced(req.nonce, target.static, target.endpoint,
                                                     target.lan, target.names, to_target)),
                         me.static, addr)
            + self._sealed(p.encode_reply(p.Introduced(target.nonce, me.static, me.endpoint,
                                                       me.lan, me.names, to_me)),
                           target.static, target.endpoint, self._via(target.server))
        )

    def _handle_leave(self, req: p.Request, addr: Endpoint, now: float) -> list[Send]:
        gone = self.store.remove(req.network, req.static)
        if gone is None:
            return []
        return self._announce(gone, p.Left(b"", gone.static), now)

    # --- helpers ---------------------------------------------------------------------------
    def _announce(self, about: Member, msg: p.Joined | p.Left, now: float,
                  members: list[Member] | None = None) -> list[Send]:
        """Push `msg` to every other live member (`members`, read from the store if not given),
        each with its own registration nonce."""
        out = []
        for m in self.store.members(about.network, now) if members is None else members:
            if m.static == about.static:
                continue
            if isinstance(msg, p.Joined):
                data = p.encode_reply(p.Joined(m.nonce, msg.peer))
            else:
                data = p.encode_reply(p.Left(m.nonce, msg.static))
            out += self._sealed(data, m.static, m.endpoint, self._via(m.server))
        return out

    def _via(self, server: str) -> str:
        """"" for a member of this server (or of a store that records none), else its server."""
        return "" if server == self.server_id else server

    def _sealed(self, plain: bytes, node_key: bytes, addr: Endpoint,
                via: str = "") -> list[Send]:
        """`plain` sealed (Noise K) to the node whose proven static key is `node_key`; nothing
        for a key no message can be sealed to (only a store written by an older version, whose
        keys were not proven, can hold one)."""
        try:
            return [Send(seal_reply(plain, self.static_private, node_key, self._rng(32)), addr,
                         via)]
        except NoiseError:
            self.stats["unsealable"] += 1
            return []

    def _cookie_reply(self, nonce: bytes, addr: Endpoint, now: float) -> Send:
        cookie = self.cookies.make(addr, now)
        reply = p.CookieReply(nonce, cookie, addr, self.static_public)
        return Send(p.encode_cookie_reply(reply), addr)

    def _refuse(self, req: p.Request, addr: Endpoint, code: int, name: str = "",
                holder: bytes = b"", counter: int = 0, cap: int = 0) -> list[Send]:
        refusal = p.Refused(req.nonce, code, name, holder, counter, cap)
        return self._sealed(p.encode_reply(refusal), req.static, addr)


def _peer(m: Member, now: float) -> p.Peer:
    return p.Peer(m.static, m.endpoint, int(max(0.0, now - m.last_seen)), m.names)


def _names(names: tuple[str, ...]) -> str:
    """Log words for a member's names: a node that only connects has none."""
    return ", ".join(names) if names else "a node without names"


def _endpoint(addr: Endpoint) -> str:
    """`10.0.1.2:43540`, `[::1]:7000`: never a Python tuple in the log."""
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
