"""Join codes: a network secret in a form people can copy, read aloud and mistype safely.

Layout: ``ptn1-`` followed by the RFC 4648 base32 (no padding) of ``secret (32 B) || check (4 B)``,
grouped in blocks of five letters joined by ``-``. ``check`` is the first 4 bytes of a BLAKE2s
digest of the secret, so a mistyped character is caught (a random typo passes with chance 2^-32)
instead of silently joining a different network. Parsing ignores case, spaces and dashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from tunnel.keys.netkeys import NETWORK_SECRET_SIZE

PREFIX = "ptn1"
CHECK_SIZE = 4  # bytes
GROUP = 5  # letters per group


class JoinCodeError(ValueError):
    """The text is not a valid join code; the message says why in plain words."""


def _check(secret: bytes) -> bytes:
    return hashlib.blake2s(secret, person=b"ptn-code").digest()[:CHECK_SIZE]


def encode_join_code(secret: bytes) -> str:
    if len(secret) != NETWORK_SECRET_SIZE:
        raise ValueError(f"network secret must be {NETWORK_SECRET_SIZE} bytes")
    body = base64.b32encode(secret + _check(secret)).decode("ascii").rstrip("=").lower()
    groups = [body[i : i + GROUP] for i in range(0, len(body), GROUP)]
    return "-".join([PREFIX, *groups])


def decode_join_code(text: str) -> bytes:
    compact = "".join(text.split()).replace("-", "").upper()
    if not compact.startswith(PREFIX.upper()):
        raise JoinCodeError(
            "a join code starts with 'ptn1-'; copy the whole line `ptunnel invite` printed"
        )
    body = compact[len(PREFIX) :]
    expected_len = len(encode_join_code(bytes(NETWORK_SECRET_SIZE)).replace("-", "")) - len(PREFIX)
    if len(body) != expected_len:
        raise JoinCodeError(
            f"the join code has {len(body)} letters after 'ptn1', expected {expected_len}; "
            "copy the whole line `ptunnel invite` printed"
        )
    padded = body + "=" * (-len(body) % 8)
    try:
        raw = base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise JoinCodeError(
            "the join code contains letters that are not base32 (a-z, 2-7); check for typos"
        ) from exc
    secret, check = raw[:NETWORK_SECRET_SIZE], raw[NETWORK_SECRET_SIZE:]
    if len(check) != CHECK_SIZE or _check(secret) != check:
        raise JoinCodeError("the join code's checksum does not match: it has a typo; copy it again")
    return secret
