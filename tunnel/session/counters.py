"""Why the session layer dropped datagrams, and what it did instead (for tests and `status`).

Kept apart from `device.py` because sessions count into it too (`staged_dropped`, handshake
outcomes) and `session.py` must not import the device.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Counters:
    """Why datagrams were dropped, and what was done; for tests and `ptunnel status`."""

    malformed: int = 0  # wrong size or header for its type
    not_ours: int = 0  # a type this layer does not own (rendezvous, relay, unknown)
    bad_mac1: int = 0  # handshake message not made for us in this network: no reply
    queue_full: int = 0  # handshake queue full
    cookie_sent: int = 0  # under load, no valid mac2: cookie reply instead of DH work
    rate_limited: int = 0  # under load, source over 20 handshakes/s
    bad_handshake: int = 0  # handshake message failed to decrypt or authenticate
    not_allowed: int = 0  # initiator not on the allow list: no reply
    old_version: int = 0  # initiation without transport parameters (ptunnel version 1)
    replay: int = 0  # replayed initiation (old timestamp) or transport counter
    flood: int = 0  # initiation within 20 ms of the same peer's previous one
    unknown_index: int = 0  # response, cookie reply or data for no handshake/keys of ours
    stale: int = 0  # data under keys older than REJECT_AFTER_TIME
    bad_tag: int = 0  # data failed authentication
    bad_cookie: int = 0  # cookie reply that does not answer our last message
    cookie_received: int = 0
    staged_dropped: int = 0  # payloads dropped while waiting for a handshake
    initiations_worked: int = 0  # initiations given Diffie-Hellman work (consumed)
    handshakes_completed: int = 0
    handshakes_failed: int = 0
    session_limit: int = 0  # a new session refused: `max_sessions` in use, none idle
    sessions_removed: int = 0  # idle sessions removed with their indices
