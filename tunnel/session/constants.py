"""Timers and sizes of the secure session layer.

Follows WireGuard's `device/constants.go` (whitepaper section 6): the "protocol" values are the
whitepaper's and must match on both ends; the "implementation" values are local choices.
All times are seconds on the monotonic `now` scale; sizes are bytes.
"""

from __future__ import annotations

# --- protocol (WireGuard whitepaper, section 6.1) -------------------------------------------------
REKEY_AFTER_MESSAGES = 2**60  # messages; the initiator rekeys long before nonces could run out
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1  # messages; last counter the window can judge
REKEY_AFTER_TIME = 120.0  # s; the initiator of a keypair starts a new handshake after this age
REJECT_AFTER_TIME = 180.0  # s; a keypair older than this neither sends nor receives
REKEY_ATTEMPT_TIME = 90.0  # s; stop retrying a handshake after this long without an answer
REKEY_TIMEOUT = 5.0  # s; resend an unanswered initiation after this long (plus jitter)
REKEY_TIMEOUT_JITTER_MAX = 0.333  # s; jitter spreads retries of many peers apart
KEEPALIVE_TIMEOUT = 10.0  # s; answer received data if we sent nothing this long
COOKIE_REFRESH_TIME = 120.0  # s; lifetime of a cookie secret (responder) and a cookie (initiator)
HANDSHAKE_INITIATION_RATE = 0.02  # s; accept at most one initiation per peer per 20 ms (50/s)
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # = 18 retries, then give up
# AES-256-GCM transport keys (when both sides negotiate it, `params.py`) protect fewer packets:
# QUIC's confidentiality limit for AES-GCM (RFC 9001 §6.6, packets of up to 64 KiB) is 2^23.
# Its initiator rekeys at half of that; no keypair sends past it (ChaCha20-Poly1305 has no such
# limit below REJECT_AFTER_MESSAGES).
AES_GCM_REJECT_AFTER_MESSAGES = 2**23  # messages
AES_GCM_REKEY_AFTER_MESSAGES = 2**22  # messages
# Receiving with a keypair this old makes its initiator rekey now, so the next keypair is ready
# before this one hits REJECT_AFTER_TIME (165 s).
REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
# Key material of a silent peer is wiped after this long (wireguard-go: 3 x RejectAfterTime).
ZERO_KEYS_AFTER = REJECT_AFTER_TIME * 3

# --- implementation (local choices, wireguard-go values where it has them) ----------------------
PERSISTENT_KEEPALIVE_DEFAULT = 25.0  # s; UDP NAT mappings typically expire after 30 s of silence
MAX_PENDING_HANDSHAKES = 1024  # messages; wireguard-go QueueHandshakeSize
UNDER_LOAD_QUEUE_LENGTH = MAX_PENDING_HANDSHAKES // 8  # = 128: queue this long means "under load"
UNDER_LOAD_AFTER_TIME = 1.0  # s; stay under load this long after the queue was last that long
# Handshakes that cost DH work, per `handle_timer` turn: about 150 us of DH each in Python, so
# one turn stays under ~5 ms and data packets are not starved while a flood is being worked off.
HANDSHAKES_PER_TURN = 32
RATE_LIMIT_PER_SECOND = 20  # handshakes/s per source IP under load (wireguard-go ratelimiter)
RATE_LIMIT_BURST = 5  # handshakes; bucket depth per source IP
RATE_LIMIT_GC_AFTER = 1.0  # s; forget an idle source after this long
RATE_LIMIT_MAX_SOURCES = 65536  # entries; bounds memory when a flood uses many source addresses
MAX_STAGED_PACKETS = 128  # payloads held during a handshake (wireguard-go QueueStagedSize)

# --- bounds of per-peer state (issue 12) --------------------------------------------------------
# A member can mint static keys at will (the network psk is shared), so everything kept per key
# is capped in total and idle state is reaped. Per key there is at most one session, holding at
# most 3 keypairs and 1 pending handshake, so 4 indices (and one link in the node).
# Sessions in all, and the node's links (peers) too: about 3.5 KB a session, and a link with a
# channel much more; a node talks to a handful of peers, a busy exposing node to hundreds.
MAX_SESSIONS = 1024
# s; a session with no authenticated packet for this long and no handshake running is removed
# with its indices. Every key it holds is older than REJECT_AFTER_TIME by then (keys are only
# derived by an authenticated handshake message), so nothing usable is lost: a peer that comes
# back handshakes anew, as after a restart. Also reaps a handshake that never completed.
SESSION_IDLE_LIMIT = REJECT_AFTER_TIME
# Newest initiation timestamps kept for replay protection: those of every session, and of peers
# without one, oldest forgotten first (see `timestamps.py`); 44 bytes each, also on disk.
MAX_INITIATION_TIMESTAMPS = 8 * MAX_SESSIONS
# s; while sessions are refused for want of room, one WARNING a burst, a burst ending after this
# long without a refusal.
LIMIT_LOG_INTERVAL = 10.0
