"""The node's secure-session endpoint: one per UDP socket, all peers (sans-IO).

Models wireguard-go's `Device` (`device/receive.go`, `device/device.go`): it owns the static key,
the network psk, the optional allow list, the index table, the cookie checker, the load state,
the per-source rate limiter and the queue of handshake messages waiting for Diffie-Hellman work.

Interface (bytes and `now` in, bytes and deadlines out; `wall_time` is `time.time()`, used only
for the TAI64N timestamp of initiations)::

    device = Device(static_private, psk, allowed=None, rng=os.urandom, params=TransportParams())
    session = device.connect(peer_public, [addr, ...], now, wall_time)  # initiator
    device.receive(data, addr, now, wall_time) -> (session, payload) | None  # types 1-4
    device.receive_transport(data, addr, now) -> (session, payload) | None   # type 4 only
    device.receive_batch(data, segment, addr, now, wall_time)  # a GRO buffer, see below
    device.receive_datagram(data, addr, now, wall_time)  # payloads as events (tests, benchmarks)
    session.seal(payload, now) -> bytes | None     # hot path: send to session.endpoint
    device.datagrams_to_send() -> [(datagram, addr), ...]   # `wire.is_initiation(datagram)`
    device.get_timer() -> deadline | None;  device.handle_timer(now, wall_time)
    device.next_event() -> HandshakeCompleted | PayloadReceived | HandshakeRefused | ... | None
    device.replay_table() / load_replay_table(table) / replay_table_version  # for the shell
    device.counters  # why packets were dropped

Receive path, in WireGuard's order:

1. Size and type checks; types this layer does not own are ignored (`counters.not_ours`).
   `receive` returns transport data at once (step 5); everything else goes through steps 2-4.
2. Handshake messages (initiation, response): mac1 must be valid (`bad_mac1`: silence), then they
   join a bounded queue (`queue_full` beyond 1024). No DH work is done on receipt.
3. `handle_timer` works off queued messages, at most HANDSHAKES_PER_TURN of them with DH work
   (`get_timer` returns a due deadline while the queue is not empty). While under load (queue
   >= 1/8 full, and for 1 s after), a message without a valid mac2 gets a cookie reply (64 B,
   smaller than anything that triggers it) and no DH; with a valid mac2 it must pass the per-IP
   rate limiter (20/s, burst 5).
4. An initiation is decrypted (2 DH), then refused without reply if its initiator is not on the
   allow list (`not_allowed`), its timestamp is not newer than that peer's last (`replay`), or
   it comes within 20 ms of the previous one (`flood`), or it would be a session past
   `max_sessions` (`session_limit`). A version-1 initiation (no transport parameters, from
   ptunnel before them) is refused too (`old_version`), with a WARNING and `HandshakeRefused`
   so the user learns to upgrade that node. Only then is any state created.
5. Transport data: index lookup, key age, AEAD open (`bad_tag`), then the replay window and
   the keypair's counter limit (lower for AES-256-GCM keys, `constants.py`).
   `datapath.open_batch` does all of it for a whole GRO buffer in one call (in C when built);
   `receive_batch` then applies the results in order.

Bounds (issue 12; a member can mint static keys at will): at most `max_sessions` sessions, one
per key with at most 4 indices; a session idle for SESSION_IDLE_LIMIT is removed with its
indices (`SessionRemoved`); initiation timestamps are kept per key in a table no newcomer can
flush (`timestamps.py`), which the shell may save and load across restarts (`replay_table`,
`load_replay_table`). Session deadlines live in one heap (`tunnel.timerheap`): `get_timer` and
`handle_timer` cost O(log n) per due session, not a walk over all of them.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable
from typing import Final

from tunnel.addresses import Addr, format_endpoint
from tunnel.session import crypto, datapath, handshake
from tunnel.session.constants import (
    HANDSHAKE_INITIATION_RATE,
    HANDSHAKES_PER_TURN,
    LIMIT_LOG_INTERVAL,
    MAX_INITIATION_TIMESTAMPS,
    MAX_PENDING_HANDSHAKES,
    MAX_SESSIONS,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_QUEUE_LENGTH,
)
from tunnel.session.cookie import CookieChecker
from tunnel.session.counters import Counters
from tunnel.session.events import HandshakeRefused, PayloadReceived, SessionEvent, SessionRemoved
from tunnel.session.indextable import IndexTable
from tunnel.session.params import TransportParams
from tunnel.session.ratelimit import HandshakeRateLimiter
from tunnel.session.session import Keypair, Session, SessionConfig
from tunnel.session.timestamps import InitiationTimestamps
from tunnel.session.wire import (
    COOKIE_REPLY_SIZE,
    HEADER_COOKIE_REPLY,
    INITIATION_BASE_SIZE,
    INITIATION_MAX_SIZE,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    RESPONSE_BASE_SIZE,
    RESPONSE_MAX_SIZE,
    SESSION_MESSAGE_TYPES,
)
from tunnel.timerheap import TimerHeap

log = logging.getLogger(__name__)

_OK: Final = datapath.OK
_NOT_TRANSPORT: Final = datapath.NOT_TRANSPORT
# Counters.<name> of each drop verdict of `datapath.open_batch`.
_DROPS: Final = {
    datapath.MALFORMED: "malformed",
    datapath.UNKNOWN_INDEX: "unknown_index",
    datapath.STALE: "stale",
    datapath.BAD_TAG: "bad_tag",
    datapath.REPLAY: "replay",
}
OLD_VERSION_REASON: Final = (
    "peer runs an older ptunnel without transport parameters; upgrade both ends"
)


class SessionLimitReached(Exception):
    """`connect` to a new peer while `max_sessions` sessions are in use; none is idle yet."""


class Device:
    """All secure sessions of one node; see the module docstring."""

    def __init__(
        self,
        static_private: bytes,
        psk: bytes,
        allowed: Iterable[bytes] | None = None,
        rng: crypto.Rng = os.urandom,
        config: SessionConfig | None = None,
        max_sessions: int = MAX_SESSIONS,
        params: TransportParams | None = None,
    ) -> None:
        # `params`: our limits and ciphers, sent in every handshake message (`params.py`)
        self.identity = handshake.Identity.create(static_private, psk, params)
        self.max_sessions = max_sessions
        self.allowed: frozenset[bytes] | None = None if allowed is None else frozenset(allowed)
        self.rng = rng
        self.config = config or SessionConfig()
        self.counters = Counters()
        self._checker = CookieChecker(self.identity.static_public, psk, rng)
        self._limiter = HandshakeRateLimiter()
        self._sessions: dict[bytes, Session] = {}
        # Local index -> session awaiting a response, or -> keys. Sessions add and remove their
        # own entries through `SessionHost.indices`; the device only looks indices up.
        self.indices: IndexTable[Session, Keypair] = IndexTable(rng)
        # The same live dict as `indices.keypairs`, bound once: the transport hot path then
        # looks keys up without a method call.
        self._keypairs = self.indices.keypairs
        self._timestamps = InitiationTimestamps(
            max(MAX_INITIATION_TIMESTAMPS, 8 * max_sessions))
        self._timers: TimerHeap[Session] = TimerHeap()
        self._refusing_since = float("-inf")  # last refusal for want of room (log bursts)
        self._old_version_logged = float("-inf")  # last WARNING about a version-1 peer
        self._queue: deque[tuple[bytes, Addr, float]] = deque()
        self._under_load_until = float("-inf")
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: deque[SessionEvent] = deque()
        self._wall_offset = 0.0

    @property
    def public_key(self) -> bytes:
        return self.identity.static_public

    # --- the shell's interface ----------------------------------------------------------------

    def connect(
        self, peer_public: bytes, addrs: Iterable[Addr], now: float, wall_time: float
    ) -> Session:
        """The session with `peer_public`, handshaking with every address in `addrs` at once.

        The first valid response wins and fixes `session.endpoint`. Calling it again while the
        handshake is pending sends the same initiation to addresses not tried yet; an established
        session is returned as is (new addresses are kept for later handshakes).
        """
        self._wall_offset = wall_time - now
        session = self.session_for(peer_public, now)
        session.add_candidates(addrs)
        if not session.is_established:
            session.initiate(now)
        return session

    def session_for(self, peer_public: bytes, now: float) -> Session:
        """The session with a peer, created idle if there is none yet.

        Raises `SessionLimitReached` when that would make more than `max_sessions`.
        """
        session = self._sessions.get(peer_public)
        if session is None:
            if not self._has_room(now):
                raise SessionLimitReached(
                    f"{len(self._sessions)} sessions in use, none idle yet")
            session = self._add_session(peer_public, now)
        return session

    def _add_session(self, peer_public: bytes, now: float) -> Session:
        session = Session(self, peer_public, self.config, (), now)
        self._sessions[peer_public] = session
        self._timers.schedule(session, session.get_timer())
        return session

    def _has_room(self, now: float) -> bool:
        """Room for one more session; a refusal is logged once per burst."""
        if len(self._sessions) < self.max_sessions:
            return True
        self.counters.session_limit += 1
        if now - self._refusing_since >= LIMIT_LOG_INTERVAL:
            log.warning("refusing new sessions: all %d are in use and none has been idle for "
                        "long enough to be removed", self.max_sessions)
        self._refusing_since = now
        return False

    def _remove(self, session: Session) -> None:
        """Drop an idle session with its indices and keys; its timestamp stays (`timestamps`)."""
        session.close()
        del self._sessions[session.peer_public]
        self._timers.discard(session)
        self.counters.sessions_removed += 1
        self._events.append(SessionRemoved(session.peer_public))

    # --- replay protection across restarts (the shell saves and loads the table) ---------------

    def replay_table(self) -> dict[bytes, bytes]:
        """Peer static key -> newest accepted initiation timestamp (TAI64N), to save."""
        return self._timestamps.snapshot()

    def load_replay_table(self, table: dict[bytes, bytes]) -> None:
        """Merge a saved table: initiations not newer than these are refused as replays."""
        self._timestamps.load(table)

    @property
    def replay_table_version(self) -> int:
        """Changes whenever the table does: the shell saves only then."""
        return self._timestamps.version

    def schedule(self, session: Session, deadline: float) -> None:
        """A session armed a timer (`SessionHost`); only an earlier deadline costs a push."""
        self._timers.schedule(session, deadline)

    def get_session(self, peer_public: bytes) -> Session | None:
        return self._sessions.get(peer_public)

    @property
    def sessions(self) -> list[Session]:
        """Every session, initiated or accepted (for `status`)."""
        return list(self._sessions.values())

    def receive(
        self, data: bytes, addr: Addr, now: float, wall_time: float
    ) -> tuple[Session, bytes] | None:
        """The shell's one entry for a datagram of this layer (types 1-4) from `addr`.

        Transport data: `(session, payload)` once authenticated, exactly as `receive_transport`
        (an empty payload is a keepalive; no `PayloadReceived` event is queued). Handshake
        messages and cookie replies are handled inside and return None: their results come out of
        `next_event` and `datagrams_to_send`. Anything dropped returns None and is counted.
        `wall_time` refreshes the wall clock kept for the TAI64N timestamps of our initiations;
        the transport path leaves it alone, as `receive_transport` always has.
        """
        if data and data[0] == MESSAGE_TRANSPORT:
            # Hot path: one comparison and one call more than `receive_transport`, no allocation.
            return self.receive_transport(data, addr, now)
        self._wall_offset = wall_time - now
        self._receive_control(data, addr, now)
        return None

    def receive_datagram(self, data: bytes, addr: Addr, now: float, wall_time: float) -> None:
        """Like `receive`, but transport payloads come out as `PayloadReceived` events too.

        For callers that take every result from `next_event` (tests, benchmarks); the shell
        should use `receive`, which spares an event object per packet.
        """
        self._wall_offset = wall_time - now
        if data and data[0] == MESSAGE_TRANSPORT:
            result = self.receive_transport(data, addr, now)
            if result is not None and result[1]:
                self._events.append(PayloadReceived(result[0].peer_public, result[1], addr))
        else:
            self._receive_control(data, addr, now)

    def receive_transport(
        self, data: bytes, addr: Addr, now: float
    ) -> tuple[Session, bytes] | None:
        """Authenticate and decrypt a transport datagram; None (counted) if it is dropped.

        An empty payload is a keepalive. Does not queue a `PayloadReceived` event.
        """
        ((verdict, keypair, payload),) = datapath.open_batch(self._keypairs, data, 0, now)
        if verdict != _OK:
            self._count_drop(verdict)
            return None
        assert keypair is not None  # OK names the keypair
        session = keypair.session
        session.on_transport(keypair, payload, addr, now)
        return session, payload

    def receive_batch(
        self, data: bytes, segment: int, addr: Addr, now: float, wall_time: float
    ) -> list[tuple[Session | None, bytes]]:
        """Every datagram of a GRO buffer from `addr` (`segment` bytes each, the last may be
        shorter; 0: `data` is one datagram), in order, as `receive` would take them one by one.

        Returns `(session, payload)` for authenticated transport data, `(None, datagram)` for a
        datagram of another layer (types other than 1-4) for the caller to route; handshake
        messages are handled inside and dropped datagrams counted, and neither is returned.
        All transport datagrams are opened before any is applied: a datagram under a keypair
        that an earlier one in the same buffer retires is still accepted (it was authentic).
        """
        out: list[tuple[Session | None, bytes]] = []
        for verdict, keypair, payload in datapath.open_batch(self._keypairs, data, segment, now):
            if verdict == _OK:
                assert keypair is not None  # OK names the keypair
                session = keypair.session
                session.on_transport(keypair, payload, addr, now)
                out.append((session, payload))
            elif verdict == _NOT_TRANSPORT:
                if payload and payload[0] in SESSION_MESSAGE_TYPES:
                    self._wall_offset = wall_time - now
                    self._receive_control(payload, addr, now)
                else:
                    out.append((None, payload))
            else:
                self._count_drop(verdict)
        return out

    def _count_drop(self, verdict: int) -> None:
        name = _DROPS[verdict]
        setattr(self.counters, name, getattr(self.counters, name) + 1)

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Everything queued for sending since the last call, oldest first."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline: queued handshakes are due at once, then session timers."""
        deadline = self._timers.earliest()
        if self._queue:
            queued = self._queue[0][2]
            return queued if deadline is None else min(queued, deadline)
        return deadline

    def handle_timer(self, now: float, wall_time: float) -> None:
        """Work off queued handshakes (a bounded batch) and every expired session timer."""
        self._wall_offset = wall_time - now
        # Bounded work per turn: at most HANDSHAKES_PER_TURN messages that cost DH; cheap
        # outcomes (cookie replies, rate-limited drops) may drain the whole queue.
        dh_budget = HANDSHAKES_PER_TURN
        for _ in range(min(MAX_PENDING_HANDSHAKES, len(self._queue))):
            if dh_budget == 0:
                break
            data, addr, _received = self._queue.popleft()
            if self._process_handshake(data, addr, now):
                dh_budget -= 1
        for session in self._timers.pop_due(now):
            deadline = session.get_timer()
            if deadline is not None and now >= deadline:
                session.handle_timer(now)
            if session.is_idle(now):
                self._remove(session)
            else:
                self._timers.schedule(session, session.get_timer())

    @property
    def pending_handshakes(self) -> int:
        return len(self._queue)

    def is_under_load(self, now: float) -> bool:
        """wireguard-go `IsUnderLoad`: queue at least 1/8 full now, or was within 1 s."""
        if len(self._queue) >= UNDER_LOAD_QUEUE_LENGTH:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME
            return True
        return self._under_load_until > now

    # --- used by sessions ---------------------------------------------------------------------

    def queue_datagram(self, datagram: bytes, addr: Addr) -> None:
        self._outbox.append((datagram, addr))

    def emit(self, event: SessionEvent) -> None:
        self._events.append(event)

    def wall_time(self, now: float) -> float:
        return now + self._wall_offset

    # --- handshake processing -----------------------------------------------------------------

    def _receive_control(self, data: bytes, addr: Addr, now: float) -> None:
        """Any datagram but transport data: handshake messages, cookie replies, the rest."""
        if not data:
            self.counters.malformed += 1
            return
        kind = data[0]
        if kind in (MESSAGE_INITIATION, MESSAGE_RESPONSE):
            self._receive_handshake(data, addr, now)
        elif kind == MESSAGE_COOKIE_REPLY:
            self._receive_cookie_reply(data, now)
        else:
            self.counters.not_ours += 1

    def _receive_handshake(self, data: bytes, addr: Addr, now: float) -> None:
        if data[0] == MESSAGE_INITIATION:
            low, high = INITIATION_BASE_SIZE, INITIATION_MAX_SIZE
        else:
            low, high = RESPONSE_BASE_SIZE, RESPONSE_MAX_SIZE
        if not low <= len(data) <= high or data[1:4] != b"\x00\x00\x00":
            self.counters.malformed += 1
            return
        if not self._checker.check_mac1(data):
            self.counters.bad_mac1 += 1
            return
        if len(self._queue) >= MAX_PENDING_HANDSHAKES:
            self.counters.queue_full += 1
            return
        self._queue.append((data, addr, now))

    def _process_handshake(self, data: bytes, addr: Addr, now: float) -> bool:
        """Handle one queued handshake message; True if it cost Diffie-Hellman work."""
        if self.is_under_load(now):
            if not self._checker.check_mac2(data, addr, now):
                sender_index = data[4:8]
                reply = self._checker.create_reply(data, sender_index, addr, now)
                self.queue_datagram(reply, addr)
                self.counters.cookie_sent += 1
                return False
            if not self._limiter.allow(addr[0], now):
                self.counters.rate_limited += 1
                return False
        if data[0] == MESSAGE_INITIATION:
            self._process_initiation(data, addr, now)
        else:
            self._process_response(data, addr, now)
        return True

    def _process_initiation(self, data: bytes, addr: Addr, now: float) -> None:
        self.counters.initiations_worked += 1
        initiation = handshake.consume_initiation(self.identity, data)
        if initiation is None:
            self.counters.bad_handshake += 1
            return
        peer = initiation.peer_public
        if self.allowed is not None and peer not in self.allowed:
            self.counters.not_allowed += 1
            log.info("refused initiation from %s at %s: not on the allow list", peer.hex()[:16],
                     format_endpoint(addr))
            return
        if initiation.params is None:
            self._refuse_old_version(peer, addr, now)
            return
        if self._timestamps.is_replay(peer, initiation.timestamp):
            self.counters.replay += 1
            return
        session = self._sessions.get(peer)
        if (
            session is not None
            and now - session.last_initiation_consumed < HANDSHAKE_INITIATION_RATE
        ):
            self.counters.flood += 1
            return
        if session is None:
            if not self._has_room(now):
                return
            session = Session(self, peer, self.config, (), now)
        if not session.on_initiation(initiation, addr, now):
            self.counters.bad_handshake += 1
            return
        if peer not in self._sessions:
            self._sessions[peer] = session
            self._timers.schedule(session, session.get_timer())
        self._timestamps.record(peer, initiation.timestamp, live=self._sessions)

    def _refuse_old_version(self, peer: bytes, addr: Addr, now: float) -> None:
        """An authenticated member speaks version 1: no handshake (an old node would refuse our
        longer messages anyway), but a clear reason for the log and `status`."""
        self.counters.old_version += 1
        if now - self._old_version_logged >= LIMIT_LOG_INTERVAL:  # it retries every 5 s
            self._old_version_logged = now
            log.warning("refused a handshake from %s at %s: %s", peer.hex()[:16],
                        format_endpoint(addr), OLD_VERSION_REASON)
        self._events.append(HandshakeRefused(peer, OLD_VERSION_REASON))

    def _process_response(self, data: bytes, addr: Addr, now: float) -> None:
        session = self.indices.handshake(data[8:12])
        if session is None or session.pending is None:
            self.counters.unknown_index += 1
            return
        keys = handshake.consume_response(self.identity, session.pending, data)
        if keys is None:
            self.counters.bad_handshake += 1
            return
        session.on_response(keys, addr, now)

    def _receive_cookie_reply(self, data: bytes, now: float) -> None:
        if len(data) != COOKIE_REPLY_SIZE or data[:4] != HEADER_COOKIE_REPLY:
            self.counters.malformed += 1
            return
        session = self.indices.handshake(data[4:8])
        if session is None:
            keypair = self.indices.keypair(data[4:8])  # a cookie for our response (responder)
            session = keypair.session if keypair is not None else None
        if session is None:
            self.counters.unknown_index += 1
            return
        if session.cookies.consume_reply(data, now):
            self.counters.cookie_received += 1
        else:
            self.counters.bad_cookie += 1
