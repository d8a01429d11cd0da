"""Past-tense events the session layer reports to the shell (`Device.next_event()`)."""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.addresses import Addr
from tunnel.session.params import TransportParams


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """New transport keys with `peer_public` are in use (confirmed on both sides).

    Reported for the first handshake and again after every rekey (about every 2 minutes).
    """

    peer_public: bytes
    addr: Addr
    is_initiator: bool
    #: the peer's limits (send within them) and the transport cipher of the new keys
    params: TransportParams


@dataclass(frozen=True, slots=True)
class PayloadReceived:
    """An authenticated, non-replayed, non-empty payload; `addr` is where it came from."""

    peer_public: bytes
    data: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """We gave up reaching `peer_public` (no valid response within REKEY_ATTEMPT_TIME)."""

    peer_public: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """An authenticated initiation from `peer_public` was refused for `reason` (today only:
    it runs ptunnel version 1, without transport parameters); nothing was created."""

    peer_public: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """All keys with `peer_public` were wiped after a long silence."""

    peer_public: bytes


@dataclass(frozen=True, slots=True)
class SessionRemoved:
    """The session with `peer_public` was idle past SESSION_IDLE_LIMIT and is gone, with its
    keys and indices; the next handshake with that peer starts a new one."""

    peer_public: bytes


SessionEvent = (HandshakeCompleted | PayloadReceived | HandshakeFailed | HandshakeRefused
                | SessionExpired | SessionRemoved)
