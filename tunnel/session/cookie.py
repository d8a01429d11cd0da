"""mac1, mac2 and cookie replies: WireGuard's denial-of-service defence (whitepaper 5.3, 5.4.7;
wireguard-go `device/cookie.go`).

Every handshake message ends with two 16-byte macs:

- mac1 = MAC(HASH("mac1----" || receiver public key || psk), message up to mac1). Checked before
  anything else; a bad mac1 gets no reply at all. ptunnel adds the network psk to WireGuard's key,
  so a machine outside the network cannot even make the receiver answer.
- mac2 = MAC(cookie, message up to mac2), or zeros without a cookie. A cookie is
  MAC(responder secret, source address) with a secret that changes every 2 minutes. Only checked
  while the receiver is under load: then a message without a valid mac2 gets a 64-byte cookie
  reply instead of any Diffie-Hellman work, and the sender proves it owns its address by using it.

Cookie reply: receiver index, 24-byte random nonce, XAEAD(HASH("cookie--" || public || psk),
nonce, cookie, ad = the mac1 of the message it answers), so only the sender of that message can
use it. `CookieChecker` is the receiving side (one per device), `CookieGenerator` the sending side
(one per peer).
"""

from __future__ import annotations

import hmac
from collections.abc import Hashable
from typing import Final

from tunnel.session import crypto
from tunnel.session.constants import COOKIE_REFRESH_TIME
from tunnel.session.wire import COOKIE_NONCE_SIZE, COOKIE_REPLY_SIZE, HEADER_COOKIE_REPLY, MAC_SIZE

LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"
_ZERO_MAC: Final = bytes(MAC_SIZE)
_NEVER: Final = float("-inf")


def mac1_key(public: bytes, psk: bytes) -> bytes:
    return crypto.hash_(LABEL_MAC1, public, psk)


def cookie_key(public: bytes, psk: bytes) -> bytes:
    return crypto.hash_(LABEL_COOKIE, public, psk)


def address_bytes(addr: Hashable) -> bytes:
    """A stable byte form of an opaque address, e.g. ('192.0.2.1', 51820)."""
    return repr(addr).encode()


class CookieChecker:
    """Receiving side: verifies mac1/mac2 of messages to us and makes cookie replies."""

    __slots__ = ("_cookie_key", "_mac1_key", "_rng", "_secret", "_secret_set")

    def __init__(self, public: bytes, psk: bytes, rng: crypto.Rng) -> None:
        self._mac1_key = mac1_key(public, psk)
        self._cookie_key = cookie_key(public, psk)
        self._rng = rng
        self._secret = b""
        self._secret_set = _NEVER

    def check_mac1(self, message: bytes) -> bool:
        mac1_at = len(message) - 2 * MAC_SIZE
        if mac1_at < 0:
            return False
        expected = crypto.mac(self._mac1_key, message[:mac1_at])
        return hmac.compare_digest(expected, message[mac1_at : mac1_at + MAC_SIZE])

    def check_mac2(self, message: bytes, addr: Hashable, now: float) -> bool:
        if now - self._secret_set > COOKIE_REFRESH_TIME:
            return False  # secret expired: no cookie made from it is valid any more
        mac2_at = len(message) - MAC_SIZE
        if mac2_at < 0:
            return False
        cookie = crypto.mac(self._secret, address_bytes(addr))
        return hmac.compare_digest(crypto.mac(cookie, message[:mac2_at]), message[mac2_at:])

    def create_reply(
        self, message: bytes, receiver_index: bytes, addr: Hashable, now: float
    ) -> bytes:
        """A cookie reply to `message` (whose mac1 was valid) from `addr`; 64 bytes."""
        if now - self._secret_set > COOKIE_REFRESH_TIME:
            self._secret = self._rng(crypto.KEY_SIZE)
            self._secret_set = now
        mac1_at = len(message) - 2 * MAC_SIZE
        mac1 = message[mac1_at : mac1_at + MAC_SIZE]
        cookie = crypto.mac(self._secret, address_bytes(addr))
        nonce = self._rng(COOKIE_NONCE_SIZE)
        reply = (
            HEADER_COOKIE_REPLY
            + receiver_index
            + nonce
            + crypto.xaead_encrypt(self._cookie_key, nonce, cookie, mac1)
        )
        assert len(reply) == COOKIE_REPLY_SIZE
        return reply


class CookieGenerator:
    """Sending side, one per peer: appends mac1/mac2 and takes in the peer's cookie replies."""

    __slots__ = ("_cookie", "_cookie_key", "_cookie_set", "_last_mac1", "_mac1_key")

    def __init__(self, peer_public: bytes, psk: bytes) -> None:
        self._mac1_key = mac1_key(peer_public, psk)
        self._cookie_key = cookie_key(peer_public, psk)
        self._cookie = b""
        self._cookie_set = _NEVER
        self._last_mac1: bytes | None = None

    def add_macs(self, body: bytes, now: float) -> bytes:
        """`body` (the message up to mac1) followed by mac1 and mac2."""
        mac1 = crypto.mac(self._mac1_key, body)
        self._last_mac1 = mac1
        if now - self._cookie_set < COOKIE_REFRESH_TIME:
            mac2 = crypto.mac(self._cookie, body + mac1)
        else:
            mac2 = _ZERO_MAC
        return body + mac1 + mac2

    def consume_reply(self, reply: bytes, now: float) -> bool:
        """Take the cookie from a 64-byte reply; False if it does not answer our last message."""
        if self._last_mac1 is None or len(reply) != COOKIE_REPLY_SIZE:
            return False
        nonce = reply[8 : 8 + COOKIE_NONCE_SIZE]
        cookie = crypto.xaead_decrypt_or_none(
            self._cookie_key, nonce, reply[8 + COOKIE_NONCE_SIZE :], self._last_mac1
        )
        if cookie is None:
            return False
        self._cookie = cookie
        self._cookie_set = now
        self._last_mac1 = None  # one reply per message: a replayed reply finds nothing to answer
        return True

    @property
    def has_cookie(self) -> bool:
        return self._cookie_set != _NEVER
