"""Handshake messages: WireGuard's create/consume pairs on Noise IKpsk2 (whitepaper section 5.4).

    initiator                                         responder
    create_initiation  -- initiation (148 B + P) -> consume_initiation
    consume_response   <- response (92 B + P) ----- create_response

Prologue "ptunnel v1" (WireGuard's "identifier"); the psk is `tunnel.keys.netkeys.handshake_psk` of
the network secret, mixed in by the responder's second message (psk2), so only a network member
can read the response or derive the transport keys. The initiator's static key travels encrypted
(identity hiding, as in Noise IK). The initiation payload is a TAI64N timestamp the responder
requires to grow per peer, which defeats replayed initiations, followed by the initiator's
transport parameters (`params.py`, P bytes); the response payload is the responder's parameters,
naming the transport cipher it chose from the initiator's offer. Both payloads are encrypted and
covered by the handshake hash, so neither can be read or altered on the way (no downgrade).

A version-1 initiation (ptunnel before transport parameters: the timestamp alone) is consumed
with `params` None, so the device can tell that member why it is refused; a version-1 response
(an empty payload) is refused as malformed.

Consume functions return None for anything malformed or forged and never raise; mac1/mac2 are
checked by the caller (`tunnel.session.cookie`) before any of this. A consumed initiation changes no
state here: the caller decides (timestamp, allow list) and only then creates a response.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag

from tunnel.session import crypto, noise
from tunnel.session.cookie import CookieGenerator
from tunnel.session.params import TransportParams, choose_cipher, decode_params, encode_params
from tunnel.session.wire import (
    HEADER_INITIATION,
    HEADER_RESPONSE,
    INITIATION_BASE_SIZE,
    INITIATION_MAX_SIZE,
    MACS_SIZE,
    RESPONSE_BASE_SIZE,
    RESPONSE_MAX_SIZE,
    TIMESTAMP_SIZE,
)

log = logging.getLogger(__name__)

PROLOGUE: Final = b"ptunnel v1"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a node brings to every handshake: its static key pair, the network psk and its
    transport parameters."""

    static_private: bytes
    static_public: bytes
    psk: bytes
    # Hash state both sides hold before an initiation *to us*; computed once, copied per message.
    responder_start: noise.SymmetricState
    params: TransportParams

    @classmethod
    def create(
        cls, static_private: bytes, psk: bytes, params: TransportParams | None = None
    ) -> Identity:
        public = crypto.public_key(static_private)
        return cls(
            static_private,
            public,
            psk,
            noise.initialize(PROLOGUE, public),
            TransportParams() if params is None else params,
        )


@dataclass(slots=True)
class PendingInitiation:
    """Initiator state between sending an initiation and consuming its response."""

    local_index: bytes  # 4 bytes, as on the wire
    state: noise.SymmetricState
    ephemeral_private: bytes
    peer_public: bytes
    offered: tuple[int, ...]  # the transport ciphers offered: the response must choose one


@dataclass(frozen=True, slots=True)
class ConsumedInitiation:
    """An authenticated initiation, not yet accepted (timestamp and allow list still to check).

    `params` is None for a version-1 initiation (no transport parameters): refuse it."""

    sender_index: bytes
    peer_public: bytes
    timestamp: bytes
    remote_ephemeral: bytes
    state: noise.SymmetricState
    params: TransportParams | None


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Transport keys from a completed handshake, seen from one side."""

    send_key: bytes
    receive_key: bytes
    local_index: bytes
    remote_index: bytes
    is_initiator: bool
    cipher: int  # `params.CHACHA20_POLY1305` or `params.AES_256_GCM`: both directions use it
    peer_params: TransportParams  # the limits to respect when sending to the peer


def create_initiation(
    identity: Identity,
    peer_public: bytes,
    local_index: bytes,
    ephemeral_private: bytes,
    wall_time: float,
    cookies: CookieGenerator,
    now: float,
) -> tuple[bytes, PendingInitiation]:
    """The initiation (148 B + parameters) and the state needed to consume its response."""
    state = noise.initialize(PROLOGUE, peer_public)
    body = noise.write_message_1(
        state,
        identity.static_private,
        identity.static_public,
        ephemeral_private,
        peer_public,
        crypto.tai64n(wall_time) + encode_params(identity.params),
    )
    message = cookies.add_macs(HEADER_INITIATION + local_index + body, now)
    offered = identity.params.ciphers
    return message, PendingInitiation(local_index, state, ephemeral_private, peer_public, offered)


def consume_initiation(identity: Identity, message: bytes) -> ConsumedInitiation | None:
    """Decrypt an initiation to us (mac1 already checked); None if malformed or forged.

    A version-1 initiation comes back with `params` None; malformed parameters give None."""
    if (
        not INITIATION_BASE_SIZE <= len(message) <= INITIATION_MAX_SIZE
        or message[:4] != HEADER_INITIATION
    ):
        return None
    state = identity.responder_start.copy()
    try:
        remote_ephemeral, peer_public, payload = noise.read_message_1(
            state, identity.static_private, message[8:-MACS_SIZE]
        )
    except (InvalidTag, noise.NoiseError):
        return None
    if len(payload) < TIMESTAMP_SIZE:
        return None
    timestamp = payload[:TIMESTAMP_SIZE]
    params: TransportParams | None = None
    if len(payload) > TIMESTAMP_SIZE:
        params = decode_params(payload[TIMESTAMP_SIZE:], response=False)
        if params is None:
            return None
    return ConsumedInitiation(
        message[4:8], peer_public, timestamp, remote_ephemeral, state, params
    )


def create_response(
    identity: Identity,
    initiation: ConsumedInitiation,
    local_index: bytes,
    ephemeral_private: bytes,
    cookies: CookieGenerator,
    now: float,
) -> tuple[bytes, SessionKeys] | None:
    """The response (92 B + parameters) and the responder's keys; None if the initiator's keys
    are bad, it sent no parameters (version 1) or it offers no transport cipher we support."""
    peer_params = initiation.params
    if peer_params is None:
        return None
    cipher = choose_cipher(peer_params.ciphers, identity.params.ciphers)
    if cipher is None:
        return None
    state = initiation.state.copy()
    try:
        body = noise.write_message_2(
            state,
            ephemeral_private,
            initiation.remote_ephemeral,
            initiation.peer_public,
            identity.psk,
            encode_params(identity.params, chosen=cipher),
        )
    except noise.NoiseError:
        return None
    message = cookies.add_macs(HEADER_RESPONSE + local_index + initiation.sender_index + body, now)
    receive_key, send_key = state.split()
    keys = SessionKeys(
        send_key, receive_key, local_index, initiation.sender_index, False, cipher, peer_params
    )
    return message, keys


def response_receiver_index(message: bytes) -> bytes | None:
    """The index a response is addressed to (ours), or None if it is not a response."""
    if not RESPONSE_BASE_SIZE <= len(message) <= RESPONSE_MAX_SIZE:
        return None
    if message[:4] != HEADER_RESPONSE:
        return None
    return message[8:12]


def consume_response(
    identity: Identity, pending: PendingInitiation, message: bytes
) -> SessionKeys | None:
    """Finish the handshake from the initiator's side; None if malformed or forged.

    `pending` is not modified, so a forged response leaves the handshake open for the real one.
    """
    if response_receiver_index(message) != pending.local_index:
        return None
    state = pending.state.copy()
    try:
        _, payload = noise.read_message_2(
            state,
            identity.static_private,
            pending.ephemeral_private,
            identity.psk,
            message[12:-MACS_SIZE],
        )
    except (InvalidTag, noise.NoiseError):
        return None
    # An empty payload is a version-1 response (no parameters), malformed ones are refused, and
    # the cipher must be one we offered.
    peer_params = decode_params(payload, response=True)
    if peer_params is None or peer_params.cipher not in pending.offered:
        return None
    send_key, receive_key = state.split()
    return SessionKeys(
        send_key,
        receive_key,
        pending.local_index,
        message[4:8],
        True,
        peer_params.cipher,
        peer_params,
    )
