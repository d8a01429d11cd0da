"""A secure session with one peer: its keypairs, handshake retries and timers (sans-IO).

Follows WireGuard's peer state (whitepaper sections 5.4.6, 6; wireguard-go `device/keypair.go`,
`device/timers.go`, `device/send.go`). A `Session` is created by its `Device` (`Device.connect`
for the initiator, or on an accepted initiation for the responder) and reaches the device only
through `SessionHost`, the few members it needs: identity, randomness, index table, outbox, event
queue, counters and wall clock. This module never imports `device.py` (the device imports it).

Keypairs, as in WireGuard:

| slot       | meaning                                                                         |
|------------|---------------------------------------------------------------------------------|
| `current`  | used to send; receiving works with all three                                    |
| `previous` | the keypair `current` replaced: kept so packets in flight during a rekey arrive |
| `next`     | responder only: derived, but not used to send until the initiator has sent with |
|            | it (key confirmation); then it becomes `current`                                |

Timers (each a deadline, None when not armed; `get_timer` is their minimum):

| timer         | armed when                         | on expiry                                  |
|---------------|------------------------------------|--------------------------------------------|
| retransmit    | an initiation is sent              | resend (5 s + jitter); give up after 90 s  |
| keepalive     | data received, none pending        | keepalive (cancelled by any send)          |
| new handshake | data sent, none pending            | peer silent 15 s after our data: handshake |
| persistent    | any authenticated packet in or out | keepalive (holds NAT mappings open)        |
| zero keys     | new keys derived                   | wipe all keys 540 s after the last ones    |
| idle          | no handshake running               | the device removes the session 180 s after |
|               |                                    | the last authenticated packet (`is_idle`)  |

The device keeps every session's deadline in one heap (`tunnel.timerheap`): whenever a timer is
armed earlier than before, the session tells it (`SessionHost.schedule`); a timer moved later
needs nothing, as the heap's entry is a lower bound and the device asks `get_timer` again when
it comes due.

Rekey: the initiator of `current` starts a new handshake when sending with keys older than
120 s or after `rekey_after_messages` (2^22 with AES-256-GCM keys, which no side uses past 2^23),
and when receiving with keys older than 165 s; keys older than 180 s are neither used to send
nor accepted.

Each keypair keeps what its handshake negotiated (`params.py`): the transport cipher and the
peer's transport parameters (`Session.peer_params`, the limits to send within).

Hot path: `seal` (the shell sends the result to `session.endpoint`) and `Device.receive` of
transport data. Everything else may queue datagrams on the device: after any call, the shell
drains `Device.datagrams_to_send()` and re-arms `Device.get_timer()`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tunnel.addresses import Addr
from tunnel.session import crypto
from tunnel.session.constants import (
    AES_GCM_REJECT_AFTER_MESSAGES,
    AES_GCM_REKEY_AFTER_MESSAGES,
    KEEPALIVE_TIMEOUT,
    MAX_CANDIDATES,
    MAX_STAGED_PACKETS,
    PERSISTENT_KEEPALIVE_DEFAULT,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_ON_RECEIVE_AGE,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    SESSION_IDLE_LIMIT,
    ZERO_KEYS_AFTER,
)
from tunnel.session.cookie import CookieGenerator
from tunnel.session.counters import Counters
from tunnel.session.datapath import new_opener, new_sealer
from tunnel.session.events import (
    HandshakeCompleted,
    HandshakeFailed,
    SessionEvent,
    SessionExpired,
)
from tunnel.session.handshake import (
    ConsumedInitiation,
    Identity,
    PendingInitiation,
    SessionKeys,
    create_initiation,
    create_response,
)
from tunnel.session.indextable import IndexTable
from tunnel.session.params import AES_256_GCM, TransportParams
from tunnel.session.wire import HEADER_TRANSPORT, Payload, payload_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Per-session settings; tests shrink the limits to reach them quickly."""

    persistent_keepalive: float | None = PERSISTENT_KEEPALIVE_DEFAULT  # s; None turns it off
    rekey_after_messages: int = REKEY_AFTER_MESSAGES
    rekey_after_time: float = REKEY_AFTER_TIME


class SessionHost(Protocol):
    """What a `Session` needs from the device that owns it, and nothing more (`Device` is one).

    Read-only members are properties so that plain attributes of the device satisfy them.
    """

    @property
    def identity(self) -> Identity:
        """Our static key pair and the network psk."""
        ...

    @property
    def rng(self) -> crypto.Rng:
        """Randomness for ephemeral keys and retry jitter."""
        ...

    @property
    def indices(self) -> IndexTable[Session, Keypair]:
        """The device-wide table of local indices; sessions add and remove their own."""
        ...

    @property
    def counters(self) -> Counters:
        """Where sessions count staged drops and handshake outcomes."""
        ...

    def queue_datagram(self, datagram: bytes, addr: Addr) -> None:
        """Send `datagram` to `addr` (it comes out of `Device.datagrams_to_send`)."""
        ...

    def emit(self, event: SessionEvent) -> None:
        """Report `event` to the shell (it comes out of `Device.next_event`)."""
        ...

    def wall_time(self, now: float) -> float:
        """The wall clock at monotonic `now`, for the TAI64N timestamp of initiations."""
        ...

    def schedule(self, session: Session, deadline: float) -> None:
        """`session` armed a timer for `deadline`, perhaps earlier than any it had."""
        ...


class Keypair:
    """Transport keys of one handshake: AEAD objects are made once, here, not per packet.

    `send` and `receive` come from `datapath` (the C data plane or its Python twin); `receive`
    holds the replay window, the expiry and the counter limit, so one `open_batch` call judges a
    whole GRO buffer. Its limits are precomputed as absolute values so the hot paths compare
    once per rule. The cipher is the one the handshake negotiated (`params.py`):
    ChaCha20-Poly1305 or AES-256-GCM, both with the same 12-byte counter nonce and 16-byte tag,
    so the wire layout is the same.
    """

    __slots__ = (
        "cipher",
        "created",
        "expires",
        "is_initiator",
        "local_index",
        "peer_params",
        "receive",
        "reject_counter",
        "rekey_counter",
        "rekey_on_receive",
        "rekey_time",
        "send",
        "send_counter",
        "session",
    )

    def __init__(
        self, keys: SessionKeys, created: float, session: Session, config: SessionConfig
    ) -> None:
        self.cipher = keys.cipher
        self.peer_params = keys.peer_params
        self.expires = created + REJECT_AFTER_TIME  # neither send nor accept from then on
        rekey_after = config.rekey_after_messages
        # No counter at or past this is sent or accepted under these keys.
        self.reject_counter = REJECT_AFTER_MESSAGES
        if keys.cipher == AES_256_GCM:
            self.reject_counter = AES_GCM_REJECT_AFTER_MESSAGES
            rekey_after = min(rekey_after, AES_GCM_REKEY_AFTER_MESSAGES)
        # The first 8 bytes of every packet we send name the peer's index for these keys.
        self.send = new_sealer(keys.send_key, HEADER_TRANSPORT + keys.remote_index, keys.cipher)
        self.receive = new_opener(keys.receive_key, self.expires, keys.cipher, self.reject_counter)
        self.send_counter = 0
        self.local_index = keys.local_index
        self.is_initiator = keys.is_initiator
        self.created = created
        self.session = session
        never = math.inf
        # Only the initiator of a keypair rekeys on its account (WireGuard), so both sides do
        # not start handshakes at once; a responder reaching the reject limit initiates one.
        if keys.is_initiator:
            self.rekey_counter = min(rekey_after, self.reject_counter)
            self.rekey_time = created + config.rekey_after_time
            self.rekey_on_receive = created + REKEY_ON_RECEIVE_AGE
        else:
            self.rekey_counter = self.reject_counter
            self.rekey_time = self.rekey_on_receive = never


class Session:
    """The secure session with one peer (WireGuard's "peer"); see the module docstring."""

    __slots__ = (
        "_attempt_started",
        "_attempts",
        "_closed",
        "_current",
        "_host",
        "_keepalive_due",
        "_last_initiation_sent",
        "_new_handshake_due",
        "_next",
        "_pending_message",
        "_persistent_due",
        "_persistent_keepalive",
        "_previous",
        "_retransmit_due",
        "_sent_last_minute_handshake",
        "_staged",
        "_zero_keys_due",
        "candidates",
        "config",
        "cookies",
        "endpoint",
        "last_active",
        "last_handshake",
        "last_initiation_consumed",
        "peer_public",
        "pending",
    )

    def __init__(
        self,
        host: SessionHost,
        peer_public: bytes,
        config: SessionConfig,
        candidates: Iterable[Addr],
        now: float,
    ) -> None:
        self.peer_public = peer_public
        self.config = config
        self._persistent_keepalive = config.persistent_keepalive  # s or None; read per packet
        # Where authenticated packets last came from (roaming); None before any handshake.
        self.endpoint: Addr | None = None
        # Addresses to try for an initiation (hole punching sends to all of them at once).
        self.candidates: list[Addr] = list(candidates)[-MAX_CANDIDATES:]
        self.cookies = CookieGenerator(peer_public, host.identity.psk)
        self._host = host
        self._current: Keypair | None = None
        self._previous: Keypair | None = None
        self._next: Keypair | None = None
        self.pending: PendingInitiation | None = None  # our initiation awaiting a response
        self._pending_message = b""  # its bytes, for candidates learnt while it is pending
        self._attempts = 0
        self._attempt_started = 0.0
        self._last_initiation_sent = float("-inf")
        self.last_initiation_consumed = float("-inf")  # responder flood check
        self.last_handshake: float | None = None  # when the keys in use were derived (status)
        # Last authenticated packet or accepted handshake message (creation until then): the
        # idle reap counts from here.
        self.last_active = now
        self._sent_last_minute_handshake = False
        self._staged: deque[bytes] = deque()
        self._closed = False  # removed by the device (idle): never handshakes again
        self._retransmit_due: float | None = None
        self._keepalive_due: float | None = None
        self._new_handshake_due: float | None = None
        self._persistent_due: float | None = None
        self._zero_keys_due: float | None = None

    # --- sending ------------------------------------------------------------------------------

    def seal(self, payload: Payload, now: float) -> bytes | None:
        """The transport datagram carrying `payload` (empty = keepalive), for `self.endpoint`.

        None if no usable keys: the payload is then staged and a handshake started; it goes out
        through `Device.datagrams_to_send()` once the handshake completes.
        """
        keypair = self._current
        if keypair is None or now >= keypair.expires:
            self._stage(payload, now)
            return None
        counter = keypair.send_counter
        if counter >= keypair.rekey_counter:
            if counter >= keypair.reject_counter:
                self._stage(payload, now)
                return None
            self._send_initiation(now, is_retry=False)
        elif now >= keypair.rekey_time:
            self._send_initiation(now, is_retry=False)
        keypair.send_counter = counter + 1
        datagram = keypair.send.seal(payload, counter)
        # `_on_sent`, written out: this runs once per packet.
        self._keepalive_due = None
        if payload and self._new_handshake_due is None:
            self._new_handshake_due = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
            self._host.schedule(self, self._new_handshake_due)
        if self._persistent_keepalive is not None:
            # Moved later: the heap's entry for the earlier deadline already covers it.
            armed = self._persistent_due is not None
            self._persistent_due = now + self._persistent_keepalive
            if not armed:
                self._host.schedule(self, self._persistent_due)
        return datagram

    def seal_batch(self, payloads: Sequence[Payload], now: float) -> bytes | None:
        """The datagrams of `payloads` back to back, under consecutive counters of one key.

        For one GSO send: the caller chose payloads of one size (the last may be shorter), so
        the datagrams are all `size + 32` bytes. None if the keys cannot seal all of them (none
        yet, expired, or out of counters): every payload is then staged, as `seal` stages one.
        Timers and rekeying are exactly as if each payload had been sealed alone.
        """
        count = len(payloads)
        keypair = self._current
        if (
            keypair is None
            or now >= keypair.expires
            or keypair.send_counter + count > keypair.reject_counter
        ):
            for payload in payloads:
                self._stage(payload, now)
            return None
        counter = keypair.send_counter
        if counter + count > keypair.rekey_counter or now >= keypair.rekey_time:
            self._send_initiation(now, is_retry=False)
        keypair.send_counter = counter + count
        datagrams = keypair.send.seal_batch(payloads, counter)
        self._on_sent(any(payloads), now)
        return datagrams

    def _on_sent(self, carried_data: bool, now: float) -> None:
        """Timers after sending: no keepalive needed, expect an answer to data."""
        self._keepalive_due = None
        if carried_data and self._new_handshake_due is None:
            self._new_handshake_due = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
        if self._persistent_keepalive is not None:
            self._persistent_due = now + self._persistent_keepalive

    def send(self, payload: bytes, now: float) -> None:
        """Like `seal`, but queue the datagram on the host's outbox."""
        datagram = self.seal(payload, now)
        if datagram is not None and self.endpoint is not None:
            self._host.queue_datagram(datagram, self.endpoint)

    @property
    def peer_params(self) -> TransportParams | None:
        """The peer's transport parameters from the newest handshake whose keys are in use."""
        return None if self._current is None else self._current.peer_params

    @property
    def cipher(self) -> int | None:
        """The transport cipher of the keys in use (`params.CHACHA20_POLY1305`, ...)."""
        return None if self._current is None else self._current.cipher

    @property
    def is_established(self) -> bool:
        """True if we hold keys we may send with (as of their creation; see `seal`)."""
        return self._current is not None

    def initiate(self, now: float) -> None:
        """Start a handshake now (to the endpoint and every candidate), unless one is running."""
        self._send_initiation(now, is_retry=False)

    def add_candidates(self, addrs: Iterable[Addr]) -> None:
        """More addresses to try (hole punching learns them over time).

        While an initiation is pending, new addresses get that same initiation at once; the first
        valid response from any address completes the handshake.
        """
        for addr in addrs:
            if addr in self.candidates:
                continue
            if len(self.candidates) >= MAX_CANDIDATES:
                del self.candidates[0]  # the oldest: a later introduction superseded it
            self.candidates.append(addr)
            if self.pending is not None and addr != self.endpoint:
                self._host.queue_datagram(self._pending_message, addr)

    def _stage(self, payload: Payload, now: float) -> None:
        if self._closed:
            return  # the device removed this session: whoever still holds it sends nothing
        if len(self._staged) >= MAX_STAGED_PACKETS:
            self._staged.popleft()  # keep the newest, as wireguard-go does
            self._host.counters.staged_dropped += 1
        self._staged.append(payload_bytes(payload))  # parts may be views of a stream's buffer
        self._send_initiation(now, is_retry=False)

    def _flush_staged(self, now: float) -> None:
        while self._staged and self.endpoint is not None:
            datagram = self.seal(self._staged.popleft(), now)
            if datagram is None:
                return
            self._host.queue_datagram(datagram, self.endpoint)

    def _targets(self) -> list[Addr]:
        targets = [] if self.endpoint is None else [self.endpoint]
        targets.extend(addr for addr in self.candidates if addr not in targets)
        return targets

    def _send_initiation(self, now: float, is_retry: bool) -> None:
        if self._closed:
            return  # removed by the device: a fresh session handshakes instead
        if not is_retry:
            if self.pending is not None or now - self._last_initiation_sent < REKEY_TIMEOUT:
                return  # the retransmit timer owns a running handshake
            self._attempts = 0
            self._attempt_started = now
        targets = self._targets()
        if not targets:
            log.warning("no address to reach peer %s", self.peer_public.hex()[:16])
            return
        host = self._host
        if self.pending is not None:
            host.indices.remove(self.pending.local_index)
        message, self.pending = create_initiation(
            host.identity,
            self.peer_public,
            host.indices.add_handshake(self),
            crypto.generate_private_key(host.rng),
            host.wall_time(now),
            self.cookies,
            now,
        )
        self._pending_message = message
        self._last_initiation_sent = now
        jitter = int.from_bytes(host.rng(2), "little") / 0xFFFF * REKEY_TIMEOUT_JITTER_MAX
        self._retransmit_due = now + REKEY_TIMEOUT + jitter
        host.schedule(self, self._retransmit_due)
        for addr in targets:
            host.queue_datagram(message, addr)

    # --- handshake results (called by the device) ----------------------------------------------

    def on_initiation(self, initiation: ConsumedInitiation, addr: Addr, now: float) -> bool:
        """Answer an accepted initiation; the new keys wait in `next` for confirmation."""
        host = self._host
        # Not claimed yet: the keypair it will name exists only once the response is made.
        local_index = host.indices.new_index()
        result = create_response(
            host.identity,
            initiation,
            local_index,
            crypto.generate_private_key(host.rng),
            self.cookies,
            now,
        )
        if result is None:
            host.indices.remove(local_index)
            return False
        message, keys = result
        self.last_initiation_consumed = self.last_active = now
        self._replace_next(Keypair(keys, now, self, self.config))
        self.endpoint = addr
        self._zero_keys_due = now + ZERO_KEYS_AFTER
        host.schedule(self, self._zero_keys_due)
        host.queue_datagram(message, addr)
        return True

    def on_response(self, keys: SessionKeys, addr: Addr, now: float) -> None:
        """Our initiation was answered: the new keys are `current` at once (initiator)."""
        indices = self._host.indices
        indices.remove(keys.local_index)  # the handshake's index now names the keypair
        self.pending = None
        self._retransmit_due = None
        keypair = Keypair(keys, now, self, self.config)
        indices.add_keypair(keypair.local_index, keypair)
        # wireguard-go: an unconfirmed `next` becomes `previous`, else `current` does.
        dropped = self._previous
        if self._next is not None:
            self._previous, self._next = self._next, None
            if self._current is not None:
                indices.remove(self._current.local_index)
        else:
            self._previous = self._current
        if dropped is not None:
            indices.remove(dropped.local_index)
        self._current = keypair
        self._on_keys_derived(keypair, addr, now)
        if not self._staged:
            self._staged.append(b"")  # a keepalive confirms the keys to the responder at once
        self._flush_staged(now)

    def on_transport(self, keypair: Keypair, payload: bytes, addr: Addr, now: float) -> None:
        """Timer and key bookkeeping for an authenticated transport packet."""
        if keypair is not self._current and keypair is self._next:
            self._confirm_next(addr, now)
        if addr != self.endpoint:
            self.endpoint = addr  # roaming: answer where authenticated packets come from
        self.last_active = now
        self._new_handshake_due = None
        if self._persistent_keepalive is not None:
            armed = self._persistent_due is not None
            self._persistent_due = now + self._persistent_keepalive
            if not armed:
                self._host.schedule(self, self._persistent_due)
        if payload and self._keepalive_due is None:
            self._keepalive_due = now + KEEPALIVE_TIMEOUT
            self._host.schedule(self, self._keepalive_due)
        if (
            now >= keypair.rekey_on_receive
            and keypair is self._current
            and not self._sent_last_minute_handshake
        ):
            self._sent_last_minute_handshake = True
            self._send_initiation(now, is_retry=False)

    def _confirm_next(self, addr: Addr, now: float) -> None:
        keypair = self._next
        assert keypair is not None
        if self._previous is not None:
            self._host.indices.remove(self._previous.local_index)
        self._previous, self._current, self._next = self._current, keypair, None
        self.endpoint = addr
        self._on_keys_derived(keypair, addr, now)
        self._flush_staged(now)

    def _replace_next(self, keypair: Keypair) -> None:
        if self._next is not None:
            self._host.indices.remove(self._next.local_index)
        self._next = keypair
        self._host.indices.add_keypair(keypair.local_index, keypair)

    def _on_keys_derived(self, keypair: Keypair, addr: Addr, now: float) -> None:
        self.endpoint = addr
        self.last_handshake = self.last_active = now
        self._sent_last_minute_handshake = False
        self._zero_keys_due = now + ZERO_KEYS_AFTER
        self._host.schedule(self, self._zero_keys_due)
        self._host.counters.handshakes_completed += 1
        self._host.emit(
            HandshakeCompleted(self.peer_public, addr, keypair.is_initiator, keypair.peer_params)
        )

    # --- timers -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest armed deadline, or None (never None while the device keeps it: the idle
        deadline stands whenever no handshake runs)."""
        deadlines = [
            d
            for d in (
                self._retransmit_due,
                self._keepalive_due,
                self._new_handshake_due,
                self._persistent_due,
                self._zero_keys_due,
                None if self.pending is not None else self.last_active + SESSION_IDLE_LIMIT,
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def is_idle(self, now: float) -> bool:
        """Nothing authenticated for SESSION_IDLE_LIMIT and no handshake running: the device
        removes this session (`close`). Its keys have all expired by then."""
        return self.pending is None and now - self.last_active >= SESSION_IDLE_LIMIT

    def close(self) -> None:
        """Free every index and key of this session and disarm its timers (being removed)."""
        self._closed = True
        indices = self._host.indices
        for keypair in (self._previous, self._current, self._next):
            if keypair is not None:
                indices.remove(keypair.local_index)
        if self.pending is not None:
            indices.remove(self.pending.local_index)
            self.pending = None
        self._previous = self._current = self._next = None
        self._staged.clear()
        self._retransmit_due = self._keepalive_due = self._new_handshake_due = None
        self._persistent_due = self._zero_keys_due = None

    def handle_timer(self, now: float) -> None:
        """Run every expired timer."""
        if self._retransmit_due is not None and now >= self._retransmit_due:
            self._on_retransmit_due(now)
        if self._zero_keys_due is not None and now >= self._zero_keys_due:
            self._on_zero_keys_due(now)
        if self._new_handshake_due is not None and now >= self._new_handshake_due:
            self._new_handshake_due = None
            log.debug(
                "peer %s silent after our data: new handshake", self.peer_public.hex()[:16]
            )
            self._send_initiation(now, is_retry=False)
        if self._keepalive_due is not None and now >= self._keepalive_due:
            self._keepalive_due = None
            self.send(b"", now)
        if self._persistent_due is not None and now >= self._persistent_due:
            self._persistent_due = None
            self.send(b"", now)

    def _on_retransmit_due(self, now: float) -> None:
        self._retransmit_due = None
        if now - self._attempt_started < REKEY_ATTEMPT_TIME:
            self._attempts += 1
            self._send_initiation(now, is_retry=True)
            return
        if self.pending is not None:
            self._host.indices.remove(self.pending.local_index)
            self.pending = None
        self._staged.clear()
        self._keepalive_due = None
        reason = (
            f"no valid response to {self._attempts + 1} initiations "
            f"in {now - self._attempt_started:.0f} s"
        )
        log.info("handshake with %s failed: %s", self.peer_public.hex()[:16], reason)
        self._host.counters.handshakes_failed += 1
        self._host.emit(HandshakeFailed(self.peer_public, reason))

    def _on_zero_keys_due(self, now: float) -> None:
        self._zero_keys_due = None
        for keypair in (self._previous, self._current, self._next):
            if keypair is not None:
                self._host.indices.remove(keypair.local_index)
        self._previous = self._current = self._next = None
        self._keepalive_due = self._persistent_due = self._new_handshake_due = None
        self._host.emit(SessionExpired(self.peer_public))
