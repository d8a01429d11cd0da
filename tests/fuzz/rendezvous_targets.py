"""Fuzz targets of the rendezvous protocol's decoders (`rendezvous/protocol.py`) and of the
sealed link around them (`tunnel/path/sealing.py`).

Its decoders return None for anything malformed and never raise; nothing forged opens. Each
decoder is a row here: a new message type needs a seed and a line.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rendezvous import protocol as p
from tests.fuzz.target import Check, Target
from tunnel.path.sealing import open_reply, open_request, seal_reply, seal_request
from tunnel.session.crypto import public_key

SIGNER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NETWORK = SIGNER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
STATIC = bytes(range(32, 64))
NONCE = b"n" * p.NONCE_SIZE
COOKIE = b"c" * p.COOKIE_SIZE
PEER = p.Peer(STATIC, ("198.51.100.7", 40112), 3, ("ssh-home", "web"))
NODE_PRIVATE = bytes(range(64, 96))
NODE_STATIC = public_key(NODE_PRIVATE)
SERVER_PRIVATE = bytes(range(96, 128))
SERVER_KEY = public_key(SERVER_PRIVATE)
EPHEMERAL = bytes(range(128, 160))
TOKEN = b"t" * p.RELAY_TOKEN_SIZE


def _requests() -> list[bytes]:
    def request(kind: int, **fields: object) -> bytes:
        message = p.Request(kind, NETWORK, NODE_STATIC, 7, NONCE, COOKIE, **fields)  # type: ignore[arg-type]
        return seal_request(message, b"e" * 8, SIGNER, NODE_PRIVATE, SERVER_KEY, EPHEMERAL)

    return [
        request(p.REGISTER, names=("ssh-home", "web"), lan=(("10.0.1.2", 43540), ("fd00::1", 7))),
        request(p.CONNECT, names=("ssh-home",)),
        request(p.LIST),
        request(p.LEAVE),
    ]


def _replies() -> list[bytes]:
    replies: list[p.Reply] = [
        p.CookieReply(NONCE, COOKIE, ("203.0.113.9", 5000), SERVER_KEY),
        p.RegisterReply(NONCE, ("203.0.113.9", 5000), 0, 1, (PEER,)),
        p.Listed(NONCE, 0, 2, (PEER, PEER)),
        p.Joined(NONCE, PEER),
        p.Left(NONCE, STATIC),
        p.Introduced(NONCE, STATIC, ("2001:db8::1", 443), (("10.0.1.2", 1),), ("db",), TOKEN),
        p.Refused(NONCE, p.NAME_TAKEN, "ssh-home", STATIC),
        p.Refused(NONCE, p.STALE_COUNTER, counter=9),
        p.Refused(NONCE, p.UNKNOWN_PEER, "db"),
        p.Refused(NONCE, p.NETWORK_FULL, cap=256),
        p.Refused(NONCE, p.NETWORK_REFUSED),
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
        header = p.decode_request_header(data)
        if header is None:
            return
        opened = open_request(header, SERVER_PRIVATE, SERVER_KEY)
        if opened is not None:
            assert data in genuine, "a request nobody sealed opened"
            assert opened.request.static == NODE_STATIC and opened.signed

    return check, sorted(genuine)


def setup_sealed_reply() -> tuple[Check, list[bytes]]:
    """What a node accepts from its rendezvous: only what the server's key sealed to it."""
    plain = _replies()
    genuine = {seal_reply(x, SERVER_PRIVATE, NODE_STATIC, EPHEMERAL)
               for x in plain if x[0] != p.COOKIE}
    cookie = next(x for x in plain if x[0] == p.COOKIE)

    def check(data: bytes) -> None:
        msg = open_reply(data, NODE_PRIVATE, NODE_STATIC, SERVER_KEY)
        if msg is not None and not isinstance(msg, p.CookieReply):
            assert data in genuine, "a reply the server never sealed opened"

    return check, sorted(genuine | {cookie})


TARGETS = (
    Target(
        "rendezvous-cookie-request",
        _decoder(p.decode_cookie_request, p.CookieRequest,
                 lambda: [p.encode_cookie_request(p.CookieRequest(NONCE))]),
        max_size=256,
    ),
    Target("rendezvous-request", setup_request),
    Target("rendezvous-reply", _decoder(p.decode_reply, p.Reply.__args__, _replies)),
    Target("rendezvous-sealed-reply", setup_sealed_reply),
    Target(
        "relay-envelope",
        _decoder(
            lambda d: (p.decode_relay_to(d), p.decode_relay_from(d)),
            tuple,
            lambda: [p.encode_relay_to(TOKEN, b"\x04inner"), p.encode_relay_from(STATIC, b"x")],
        ),
    ),
)
