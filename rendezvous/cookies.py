"""Stateless return-routability cookies, as in QUIC's Retry token and DTLS's HelloVerifyRequest.

A cookie proves that whoever sends a request can also receive at its source address: the server
hands it out in a COOKIE reply (never larger than the request) and keeps no state for it. Layout,
20 bytes: ``[window u32][HMAC-SHA256(secret, window || source endpoint)[:16]]``.

`now` is wall-clock seconds (the rendezvous' shared time scale, see `registry`), so several
servers that share the cookie secret through the store accept each other's cookies, and a cookie
survives a server restart.
"""

from __future__ import annotations

import hashlib
import hmac

from rendezvous.protocol import COOKIE_SIZE, COOKIE_WINDOW, Endpoint, encode_endpoint

# Time runs in windows of `protocol.COOKIE_WINDOW` seconds: a cookie is accepted in the window it
# was minted in and the next one (the protocol also says how long nodes keep one).
MAC_SIZE = 16  # bytes; 128-bit MAC, forging one is hopeless
SECRET_SIZE = 32  # bytes


class CookieJar:
    """Mints and checks cookies under one secret."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"cookie secret must be {SECRET_SIZE} bytes")
        self._secret = secret

    def _mac(self, window: int, addr: Endpoint) -> bytes:
        msg = window.to_bytes(4, "big") + encode_endpoint(addr)
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:MAC_SIZE]

    @staticmethod
    def _window(now: float) -> int:
        return int(now // COOKIE_WINDOW) & 0xFFFFFFFF

    def make(self, addr: Endpoint, now: float) -> bytes:
        window = self._window(now)
        return window.to_bytes(4, "big") + self._mac(window, addr)

    def check(self, cookie: bytes, addr: Endpoint, now: float) -> bool:
        if len(cookie) != COOKIE_SIZE:
            return False
        window = int.from_bytes(cookie[:4], "big")
        current = self._window(now)
        if window not in (current, (current - 1) & 0xFFFFFFFF):
            return False
        return hmac.compare_digest(cookie[4:], self._mac(window, addr))
