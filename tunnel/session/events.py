"""Past-tense events the session layer reports to the shell (`Device.next_event()`).

Each class spells out its `__init__`, so that mypyc compiles it (see `tunnel.channel.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.addresses import Addr
from tunnel.session.params import TransportParams


@dataclass(slots=True, init=False)
class HandshakeCompleted:
    """New transport keys with `peer_public` are in use (confirmed on both sides).

    Reported for the first handshake and again after every rekey (about every 2 minutes).
    """

    peer_public: bytes
    addr: Addr
    is_initiator: bool
    #: the peer's limits (send within them) and the transport cipher of the new keys
    params: TransportParams

    def __init__(
        self, peer_public: bytes, addr: Addr, is_initiator: bool, params: TransportParams
    ) -> None:
        self.peer_public = peer_public
        self.addr = addr
        self.is_initiator = is_initiator
        self.params = params


@dataclass(slots=True, init=False)
class PayloadReceived:
    """An authenticated, non-replayed, non-empty payload; `addr` is where it came from."""

    peer_public: bytes
    data: bytes
    addr: Addr

    def __init__(self, peer_public: bytes, data: bytes, addr: Addr) -> None:
        self.peer_public = peer_public
        self.data = data
        self.addr = addr


@dataclass(slots=True, init=False)
class HandshakeFailed:
    """We gave up reaching `peer_public` (no valid response within REKEY_ATTEMPT_TIME)."""

    peer_public: bytes
    reason: str

    def __init__(self, peer_public: bytes, reason: str) -> None:
        self.peer_public = peer_public
        self.reason = reason


@dataclass(slots=True, init=False)
class HandshakeRefused:
    """An authenticated initiation from `peer_public` was refused for `reason` (today only:
    it runs ptunnel version 1, without transport parameters); nothing was created."""

    peer_public: bytes
    reason: str

    def __init__(self, peer_public: bytes, reason: str) -> None:
        self.peer_public = peer_public
        self.reason = reason


@dataclass(slots=True, init=False)
class SessionExpired:
    """All keys with `peer_public` were wiped after a long silence."""

    peer_public: bytes

    def __init__(self, peer_public: bytes) -> None:
        self.peer_public = peer_public


@dataclass(slots=True, init=False)
class SessionRemoved:
    """The session with `peer_public` was idle past SESSION_IDLE_LIMIT and is gone, with its
    keys and indices; the next handshake with that peer starts a new one."""

    peer_public: bytes

    def __init__(self, peer_public: bytes) -> None:
        self.peer_public = peer_public


SessionEvent = (HandshakeCompleted | PayloadReceived | HandshakeFailed | HandshakeRefused
                | SessionExpired | SessionRemoved)
