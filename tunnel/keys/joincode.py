"""Join codes: a network secret, and where and who its rendezvous is, in a form people can copy,
read aloud and mistype safely.

A code is a prefix, then the RFC 4648 base32 (lower case, no padding) of its bytes, grouped in
blocks of five letters joined by ``-``. Parsing ignores case, spaces and dashes, and insists on
the canonical base32 form, so every changed letter changes the bytes.

| version | prefix | bytes                                                                     |
|---------|--------|---------------------------------------------------------------------------|
| 1       | `ptn1` | secret 32, check 4                                                        |
| 2       | `ptn2` | secret 32, rendezvous static key 32, [n u8: 1-4][len u8][`HOST:PORT`]..., |
|         |        | check 4                                                                   |

``check`` is the first 4 bytes of a BLAKE2s digest of every byte before it (its own
personalisation per version), so a mistyped character is caught (a random typo passes with
chance 2^-32) instead of silently joining a different network, or trusting a wrong server key.
Version 2 lets `ptunnel join` pin the rendezvous' key and remember its address; version 1 codes
are still accepted (the node then pins the server's key on first use).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from tunnel.keys.netkeys import NETWORK_SECRET_SIZE, PUBLIC_KEY_SIZE

PREFIX = "ptn1"
PREFIX_V2 = "ptn2"
CHECK_SIZE = 4  # bytes
GROUP = 5  # letters per group
MAX_SERVERS = 4  # rendezvous addresses in one code
MAX_SERVER_LEN = 255  # bytes of one `HOST:PORT`
_PERSON = {PREFIX: b"ptn-code", PREFIX_V2: b"ptn-cod2"}
_AGAIN = "copy the whole line `ptunnel invite` printed"


class JoinCodeError(ValueError):
    """The text is not a valid join code; the message says why in plain words."""


@dataclass(frozen=True, slots=True)
class JoinCode:
    secret: bytes
    server_key: bytes | None = None  # version 2: the rendezvous' static X25519 key
    servers: tuple[str, ...] = ()  # version 2: its `HOST:PORT` addresses, preferred first


def _check(prefix: str, data: bytes) -> bytes:
    return hashlib.blake2s(data, person=_PERSON[prefix]).digest()[:CHECK_SIZE]


def _text(prefix: str, data: bytes) -> str:
    body = base64.b32encode(data + _check(prefix, data)).decode("ascii").rstrip("=").lower()
    return "-".join([prefix, *(body[i : i + GROUP] for i in range(0, len(body), GROUP))])


def encode_join_code(secret: bytes) -> str:
    """A version 1 code: the network secret only."""
    if len(secret) != NETWORK_SECRET_SIZE:
        raise ValueError(f"network secret must be {NETWORK_SECRET_SIZE} bytes")
    return _text(PREFIX, secret)


def encode_join_code_v2(secret: bytes, server_key: bytes, servers: list[str] | tuple[str, ...],
                        ) -> str:
    """A version 2 code: the secret, the rendezvous' key and its addresses."""
    if len(secret) != NETWORK_SECRET_SIZE or len(server_key) != PUBLIC_KEY_SIZE:
        raise ValueError("a network secret and a server key are 32 bytes each")
    if not 1 <= len(servers) <= MAX_SERVERS:
        raise ValueError(f"a join code names 1-{MAX_SERVERS} rendezvous addresses")
    data = bytearray(secret + server_key + bytes([len(servers)]))
    for server in servers:
        raw = server.encode("ascii")
        if not 0 < len(raw) <= MAX_SERVER_LEN or any(c <= 0x20 for c in raw):
            raise ValueError(f"{server!r} cannot be a rendezvous address in a join code")
        data += bytes([len(raw)]) + raw
    return _text(PREFIX_V2, bytes(data))


def _decode_v2(data: bytes) -> JoinCode:
    secret, key = data[:NETWORK_SECRET_SIZE], data[NETWORK_SECRET_SIZE : 2 * NETWORK_SECRET_SIZE]
    pos = 2 * NETWORK_SECRET_SIZE
    if pos >= len(data) or not 1 <= data[pos] <= MAX_SERVERS:
        raise JoinCodeError(f"the join code names no rendezvous; {_AGAIN}")
    count, pos = data[pos], pos + 1
    servers = []
    for _ in range(count):
        length = data[pos] if pos < len(data) else 0
        raw = data[pos + 1 : pos + 1 + length]
        if length == 0 or len(raw) != length:
            raise JoinCodeError(f"the join code is cut short; {_AGAIN}")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise JoinCodeError(f"the join code's rendezvous address is garbled; {_AGAIN}"
                                ) from None
        servers.append(text)
        pos += 1 + length
    if pos != len(data):
        raise JoinCodeError(f"the join code has bytes left over; {_AGAIN}")
    return JoinCode(secret, key, tuple(servers))


def decode_join_code(text: str) -> JoinCode:
    """Parse a version 1 or 2 code. Raises JoinCodeError saying what is wrong."""
    compact = "".join(text.split()).replace("-", "").lower()
    prefix = next((x for x in (PREFIX_V2, PREFIX) if compact.startswith(x)), None)
    if prefix is None:
        raise JoinCodeError(f"a join code starts with 'ptn2-' (or 'ptn1-'); {_AGAIN}")
    body = compact[len(prefix) :]
    shortest = len(_text(PREFIX, bytes(NETWORK_SECRET_SIZE)).replace("-", "")) - len(PREFIX)
    if prefix == PREFIX and len(body) != shortest:
        raise JoinCodeError(
            f"the join code has {len(body)} letters after 'ptn1', expected {shortest}; {_AGAIN}"
        )
    if prefix == PREFIX_V2 and len(body) <= shortest:
        raise JoinCodeError(f"the join code is too short; {_AGAIN}")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raw = None
    # Only the canonical spelling counts: a typo in the last letter's unused bits changes no
    # byte, and would otherwise slip through as the same code.
    if raw is None or base64.b32encode(raw).decode("ascii").rstrip("=").lower() != body:
        raise JoinCodeError(
            "the join code contains letters that are not base32 (a-z, 2-7); check for typos"
        )
    data, check = raw[:-CHECK_SIZE], raw[-CHECK_SIZE:]
    if _check(prefix, data) != check:
        raise JoinCodeError("the join code's checksum does not match: it has a typo; copy it again")
    if prefix == PREFIX:
        return JoinCode(data)
    return _decode_v2(data)
