"""Fuzz targets of the rendezvous protocol's decoders (`rendezvous/protocol.py`).

Its decoders return None for anything malformed and never raise. The request and reply framing
is being reworked, so each decoder is a row here: a new message type needs a seed and a line.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rendezvous import protocol as p
from tests.fuzz.target import Check, Target

SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NETWORK = SIGNER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
STATIC = bytes(range(32, 64))
NONCE = b"n" * p.NONCE_SIZE
COOKIE = b"c" * p.COOKIE_SIZE
PEER = p.Peer(STATIC, ("198.51.100.7", 40112), 3, ("ssh-home", "web"))


def _requests() -> list[bytes]:
    def request(kind: int, **fields: object) -> bytes:
        message = p.Request(kind, NETWORK, STATIC, 7, NONCE, COOKIE, **fields)  # type: ignore[arg-type]
        return p.encode_request(message, SIGNER)

    return [
        request(p.REGISTER, names=("ssh-home", "web"), lan=(("10.0.1.2", 43540), ("fd00::1", 7))),
        request(p.CONNECT, names=("ssh-home",)),
        request(p.LIST),
        request(p.LEAVE),
    ]


def _replies() -> list[bytes]:
    replies: list[p.Reply] = [
        p.CookieReply(NONCE, COOKIE, ("203.0.113.9", 5000)),
        p.RegisterReply(NONCE, ("203.0.113.9", 5000), 0, 1, (PEER,)),
        p.Listed(NONCE, 0, 2, (PEER, PEER)),
        p.Joined(NONCE, PEER),
        p.Left(NONCE, STATIC),
        p.Introduced(NONCE, STATIC, ("2001:db8::1", 443), (("10.0.1.2", 1),), ("db",)),
        p.Refused(NONCE, p.NAME_TAKEN, "ssh-home", STATIC),
        p.Refused(NONCE, p.STALE_COUNTER, counter=9),
        p.Refused(NONCE, p.UNKNOWN_PEER, "db"),
    ]
    return [p.encode_reply(reply) for reply in replies]


def _decoder(decode: Callable[[bytes], object], kinds: type | tuple[type, ...],
             seeds: Callable[[], list[bytes]]) -> Callable[[], tuple[Check, list[bytes]]]:
    def setup() -> tuple[Check, list[bytes]]:
        def check(data: bytes) -> None:
            result = decode(data)
            assert result is None or isinstance(result, kinds), f"returned {result!r}"

        return check, seeds()

    return setup


def setup_request() -> tuple[Check, list[bytes]]:
    genuine = set(_requests())

    def check(data: bytes) -> None:
        decoded = p.decode_request(data)
        assert decoded is None or isinstance(decoded, p.Request)
        if p.verify_request(data, NETWORK):
            assert data in genuine, "a request nobody signed verified"

    return check, sorted(genuine)


TARGETS = (
    Target(
        "rendezvous-cookie-request",
        _decoder(p.decode_cookie_request, p.CookieRequest,
                 lambda: [p.encode_cookie_request(p.CookieRequest(NONCE))]),
        max_size=256,
    ),
    Target("rendezvous-request", setup_request),
    Target("rendezvous-reply", _decoder(p.decode_reply, p.Reply.__args__, _replies)),
    Target(
        "relay-envelope",
        _decoder(
            lambda d: (p.decode_relay_to(d), p.decode_relay_from(d)),
            tuple,
            lambda: [p.encode_relay_to(STATIC, b"\x04inner"), p.encode_relay_from(STATIC, b"x")],
        ),
    ),
)
