"""Timers and sizes of the secure session layer.

Follows WireGuard's `device/constants.go` (whitepaper section 6): the "protocol" values are the
whitepaper's and must match on both ends; the "implementation" values are local choices.
All times are seconds on the monotonic `now` scale; sizes are bytes.
"""

from __future__ import annotations

from typing import Final

# --- protocol (WireGuard whitepaper, section 6.1) -------------------------------------------------
# messages; the initiator rekeys long before nonces could run out
REKEY_AFTER_MESSAGES: Final = 2**60
REJECT_AFTER_MESSAGES: Final = 2**64 - 2**13 - 1  # messages; last counter the window can judge
# s; the initiator of a keypair starts a new handshake after this age
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0  # s; a keypair older than this neither sends nor receives
REKEY_ATTEMPT_TIME: Final = 90.0  # s; stop retrying a handshake after this long without an answer
REKEY_TIMEOUT: Final = 5.0  # s; resend an unanswered initiation after this long (plus jitter)
REKEY_TIMEOUT_JITTER_MAX: Final = 0.333  # s; jitter spreads retries of many peers apart
KEEPALIVE_TIMEOUT: Final = 10.0  # s; answer received data if we sent nothing this long
# s; lifetime of a cookie secret (responder) and a cookie (initiator)
COOKIE_REFRESH_TIME: Final = 120.0
# s; accept at most one initiation per peer per 20 ms (50/s)
HANDSHAKE_INITIATION_RATE: Final = 0.02
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # = 18 retries, then give up
# AES-256-GCM transport keys (when both sides negotiate it, `params.py`) protect fewer packets:
# QUIC's confidentiality limit for AES-GCM (RFC 9001 §6.6, packets of up to 64 KiB) is 2^23.
# Its initiator rekeys at half of that; no keypair sends or accepts a counter past it (ChaCha20-
# Poly1305 has no such limit below REJECT_AFTER_MESSAGES).
AES_GCM_REJECT_AFTER_MESSAGES: Final = 2**23  # messages
AES_GCM_REKEY_AFTER_MESSAGES: Final = 2**22  # messages
# Receiving with a keypair this old makes its initiator rekey now, so the next keypair is ready
# before this one hits REJECT_AFTER_TIME (165 s).
REKEY_ON_RECEIVE_AGE: Final = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
# Key material of a silent peer is wiped after this long (wireguard-go: 3 x RejectAfterTime).
ZERO_KEYS_AFTER: Final = REJECT_AFTER_TIME * 3

# --- implementation (local choices, wireguard-go values where it has them) ----------------------
# s; UDP NAT mappings typically expire after 30 s of silence
PERSISTENT_KEEPALIVE_DEFAULT: Final = 25.0
MAX_PENDING_HANDSHAKES: Final = 1024  # messages; wireguard-go QueueHandshakeSize
# = 128: queue this long means "under load"
UNDER_LOAD_QUEUE_LENGTH: Final = MAX_PENDING_HANDSHAKES // 8
# s; stay under load this long after the queue was last that long
UNDER_LOAD_AFTER_TIME: Final = 1.0
# Handshakes that cost DH work, per `handle_timer` turn: about 150 us of DH each in Python, so
# one turn stays under ~5 ms and data packets are not starved while a flood is being worked off.
HANDSHAKES_PER_TURN: Final = 32
# handshakes/s per source IP under load (wireguard-go ratelimiter)
RATE_LIMIT_PER_SECOND: Final = 20
RATE_LIMIT_BURST: Final = 5  # handshakes; bucket depth per source IP
RATE_LIMIT_GC_AFTER: Final = 1.0  # s; forget an idle source after this long
# entries; bounds memory when a flood uses many source addresses
RATE_LIMIT_MAX_SOURCES: Final = 65536
MAX_STAGED_PACKETS: Final = 128  # payloads held during a handshake (wireguard-go QueueStagedSize)
# Addresses one session tries its initiations at; the newest are kept. Each introduction brings
# at most 8 (`tunnel.path.candidates`), so 16 holds the current and the previous introduction
# while a member re-introducing at the rendezvous' rate cannot grow the list without bound.
MAX_CANDIDATES: Final = 16

# --- bounds of per-peer state (issue 12) --------------------------------------------------------
# A member can mint static keys at will (the network psk is shared), so everything kept per key
# is capped in total and idle state is reaped. Per key there is at most one session, holding at
# most 3 keypairs and 1 pending handshake, so 4 indices (and one link in the node).
# Sessions in all, and the node's links (peers) too: about 3.5 KB a session, and a link with a
# channel much more; a node talks to a handful of peers, a busy exposing node to hundreds.
MAX_SESSIONS: Final = 1024
# s; a session with no authenticated packet for this long and no handshake running is removed
# with its indices. Every key it holds is older than REJECT_AFTER_TIME by then (keys are only
# derived by an authenticated handshake message), so nothing usable is lost: a peer that comes
# back handshakes anew, as after a restart. Also reaps a handshake that never completed.
SESSION_IDLE_LIMIT: Final = REJECT_AFTER_TIME
# Newest initiation timestamps kept for replay protection: those of every session, and of peers
# without one, oldest forgotten first (see `timestamps.py`); 44 bytes each, also on disk.
MAX_INITIATION_TIMESTAMPS: Final = 8 * MAX_SESSIONS
# s; while sessions are refused for want of room, one WARNING a burst, a burst ending after this
# long without a refusal.
LIMIT_LOG_INTERVAL: Final = 10.0
