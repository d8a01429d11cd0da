"""Rendezvous wire protocol: message dataclasses and their codecs, shared by server and node.

One UDP socket per node carries everything; the first byte is the message type. Types 1-4 belong
to the secure session (`tunnel/session/wire.py`), 0x20-0x3F to this protocol, 0x40-0x4F to relay
envelopes. All integers are big-endian. Decoders return ``None`` for anything malformed and never
raise.

Endpoint (``EP``), variable length: ``[family u8: 4|6][address 4|16 B][port u16]``.

Unauthenticated, stateless (the server answers with its own bytes, never more than it received,
and does no Diffie-Hellman before a cookie proved the source address):

| type | name           | layout after the type byte                                        |
|------|----------------|-------------------------------------------------------------------|
| 0x20 | COOKIE_REQUEST | nonce 8, zero padding to `COOKIE_REQUEST_SIZE` (96 B) in total    |
| 0x21 | COOKIE         | nonce 8, cookie 20, observed EP, server static key 32 (≤ 80 B)    |

The server's static key in COOKIE is unauthenticated: a node that has no key for this server
(from its join code, its config or an earlier pin) pins it on first use, as ssh does; a node
that has one refuses a different key (`tunnel/path/rendezvous.py`).

Requests, node to server: a clear header, then a one-shot Noise X message
(`tunnel/session/oneway.py`, `-> e, es, s, ss`) to the server's static key, whose prologue is
`LINK_CONTEXT` + the header. The `ss` DH proves the node's static key; the header cannot be
changed without the message failing to open.

| off | size | field                                                                   |
|-----|------|-------------------------------------------------------------------------|
| 0   | 1    | type: 0x22 REGISTER, 0x24 LIST, 0x26 CONNECT, 0x28 LEAVE                |
| 1   | 8    | echo: random per request; a COOKIE sent instead of an answer echoes it  |
| 9   | 20   | cookie from COOKIE: binds the source address and a time window          |
| 29  | 32   | Noise e (clear)                                                         |
| 61  | 48   | Noise s: the node's static X25519 key, encrypted                        |
| 109 | n+16 | the payload below, encrypted                                            |

Request payload (plaintext inside the Noise message):

| off | size | field                                                                   |
|-----|------|-------------------------------------------------------------------------|
| 0   | 32   | network id                                                              |
| 32  | 8    | counter u64 < 2^63, strictly increasing per (network, node) key         |
| 40  | 8    | nonce: secret, echoed inside every reply and push                       |
| 48  | n    | body: REGISTER ``[n u8][names: len u8 + ASCII]...[m u8][LAN EP]...``;    |
|     |      | CONNECT ``[len u8][name]``; LIST and LEAVE empty                        |
| -64 | 64   | Ed25519 signature by the network signing key (the network id *is* its   |
|     |      | verifying key) over `SIGN_CONTEXT` + type + node static + cookie +      |
|     |      | every payload byte before it: the membership proof                      |

Replies and pushes, server to node (sent only to proven addresses): the type byte in clear, then
a one-shot Noise K message (`-> e, es, ss`) from the server's static key to the node's, whose
prologue is `LINK_CONTEXT` + the type byte. Only the server can write it and only that node can
read it. The plaintext inside is the layout after the type byte:

| type | name       | plaintext after the type byte                                         |
|------|------------|-----------------------------------------------------------------------|
| 0x23 | REGISTERED | nonce 8, observed EP, page u8, pages u8, PEER entries                 |
| 0x25 | LISTED     | nonce 8, page u8, pages u8, PEER entries                              |
| 0x27 | JOINED     | registration nonce 8, one PEER entry                                  |
| 0x29 | LEFT       | registration nonce 8, static 32                                       |
| 0x2B | INTRODUCED | nonce 8, static 32, relay token 16, public EP, [m u8][LAN EP]...,     |
|      |            | [n u8][names]                                                         |
| 0x2D | REFUSED    | nonce 8, code u8, detail (code-specific, see `Refused`)               |

INTRODUCED goes to both sides at once: to the requester with its request's nonce, to the
target with the nonce of the target's latest registration. Each side's relay token is its own
secret for relaying *toward* the other (one per direction, see the relay envelopes below).

PEER entry: ``[static 32][EP][seen_ago u32 seconds][n u8][names: len u8 + ASCII]...``, at most
`MAX_PEER_ENTRY` (568) bytes. A page holds `MAX_PAGE_BYTES` = twice that, so every page but the
last holds at least two entries and `MAX_MEMBERS_LIMIT` (510) members fit in 255 pages; the
largest sealed page is 1,214 bytes, under the 1,232 an IPv6 minimum-MTU path carries.

What an on-path observer still reads: IP addresses and ports, sizes, timing, the type byte,
the cookie and echo, the COOKIE exchange (observed endpoint, server key), Noise ephemerals.

Relay envelopes. RELAY_TO proves its sender holds the relay token of one introduction and one
direction: the server finds the grant by its id and checks the tag before it spends anything,
so an off-path host (even one spoofing a member's address) gets nothing forwarded. RELAY_FROM
is exactly as large as the RELAY_TO it answers (33 bytes of envelope each): no amplification.

| type | name      | layout                                                                |
|------|-----------|-----------------------------------------------------------------------|
| 0x40 | RELAY_TO  | node to server: grant id 16, tag 16, datagram                         |
| 0x41 | RELAY_FROM| server to node: source static 32, datagram                            |

grant id = BLAKE2s-128(token, person "ptrly-id"): names the grant without revealing the token.
tag = keyed BLAKE2s-128(key = token, person "ptrly-tg", [datagram length u32][its first
`RELAY_TAG_COVERS` bytes]): only the token's holder (the node it was issued to, and the server)
can make one, so a grant id seen on the wire is useless to a spoofer. The tag covers the
length and the session header (type, receiver index and packet counter, or a handshake's
ephemeral key), which makes it unique per packet; the rest is authenticated end to end by the
nodes' Noise session, and MACing all 1,200 bytes would cost 4.5 µs more per packet on both
sides for nothing the receiver does not check anyway. What an on-path observer can do with
envelopes it captured: replay them (or vary their tail), each forwarded once more within the
sender's budget and dropped by the receiving node; it can drop them just as well.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

Endpoint = tuple[str, int]

# --- specification -------------------------------------------------------------------------
COOKIE_REQUEST = 0x20
COOKIE = 0x21
REGISTER = 0x22
REGISTERED = 0x23
LIST = 0x24
LISTED = 0x25
CONNECT = 0x26
JOINED = 0x27
LEAVE = 0x28
LEFT = 0x29
INTRODUCED = 0x2B
REFUSED = 0x2D
RELAY_TO = 0x40
RELAY_FROM = 0x41

RENDEZVOUS_TYPES = range(0x20, 0x40)
RELAY_TYPES = range(0x40, 0x50)

NONCE_SIZE = 8  # bytes; 64 random bits: an off-path guess succeeds with p = 2^-64
ECHO_SIZE = 8  # bytes; as NONCE_SIZE, but in clear (COOKIE replies to a request echo it)
COOKIE_SIZE = 20  # bytes; u32 time window + 16-byte truncated HMAC-SHA256
# A cookie is minted for the current window and accepted in the current and the previous one:
# valid for 60-120 s. Nodes fetch a new one after `CLIENT_COOKIE_MAX_AGE`. Both sides rely on these
# times, so they are part of the protocol (the node does not import the server's `cookies`).
COOKIE_WINDOW = 60.0  # seconds
CLIENT_COOKIE_MAX_AGE = 45.0  # seconds; < COOKIE_WINDOW, so a cached cookie is never stale
KEY_SIZE = 32  # bytes; Ed25519 and X25519 public keys
SIGNATURE_SIZE = 64  # bytes; Ed25519
# Padding makes the request at least as large as the biggest COOKIE reply (80 B): no amplification.
COOKIE_REQUEST_SIZE = 96  # bytes
REQUEST_HEADER_SIZE = 1 + ECHO_SIZE + COOKIE_SIZE  # 29 bytes, in clear
PAYLOAD_HEADER_SIZE = KEY_SIZE + 8 + NONCE_SIZE  # network, counter, nonce: 48 bytes
SIGN_CONTEXT = b"ptunnel rendezvous request v2\x00"
# Prologue of every sealed message of the link (Noise X requests, Noise K replies).
LINK_CONTEXT = b"ptunnel rendezvous link v2\x00"
# Counters stay below 2^63: the server refuses larger ones (BAD_REQUEST), so a stale-counter
# reply can never make a client count past what 8 bytes hold (nodes start from microseconds
# since 1970, about 2^51).
COUNTER_LIMIT = 1 << 63

# --- implementation limits -----------------------------------------------------------------
MAX_NAMES = 8  # names one node may hold
MAX_LAN = 8  # LAN candidates one node may announce
MAX_NAME_LEN = 63  # a DNS label's length: names end up in host-like places
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_PEER_ENTRY = KEY_SIZE + 19 + 4 + 1 + MAX_NAMES * (1 + MAX_NAME_LEN)  # 568 bytes
# Two of the largest entries per page: every full page holds ≥ 2 entries, so the page count of
# n members is at most ceil(n / 2). A sealed page is then ≤ 1,214 bytes, under the 1,232 a
# minimum-MTU IPv6 path carries (1,280 - 40 - 8), so nothing fragments.
MAX_PAGE_BYTES = 2 * MAX_PEER_ENTRY  # 1,136 bytes of entries
MAX_PAGES = 255  # the page fields are u8
MAX_MEMBERS_LIMIT = 2 * MAX_PAGES  # 510: the most members a member list can carry
DEFAULT_MAX_MEMBERS = 256  # per network; `max_members` of the server's config

# Refusal codes.
NAME_TAKEN = 1  # detail: [len u8][name][holder static 32]
STALE_COUNTER = 2  # detail: last accepted counter u64
UNKNOWN_PEER = 3  # detail: [len u8][name]
NOT_REGISTERED = 4  # detail: empty; CONNECT from a node that has not registered
BAD_REQUEST = 5  # detail: empty; e.g. an invalid name, a counter ≥ COUNTER_LIMIT
NETWORK_REFUSED = 6  # detail: empty; this server does not admit the network (`--networks`)
NETWORK_FULL = 7  # detail: the cap u16; REGISTER of a new member of a network at its cap
TRY_LATER = 8  # detail: empty; the server cannot reach its store (Redis) now: nothing was done


class DecodeError(Exception):
    """Raised inside this module's readers; decoders turn it into ``None``."""


NAME_RULE = "1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"


def valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


def normalize_name(text: str) -> str:
    """The name `text` stands for. Names are case-insensitive, as DNS labels are (RFC 4343):
    ASCII capitals fold to lower case, and nothing else is changed. Raises ValueError with
    the rule for text that names nothing."""
    name = text.lower() if text.isascii() else text
    if not valid_name(name):
        raise ValueError(f"{text!r} cannot be a name: use {NAME_RULE} "
                         "(capitals are read as lower case)")
    return name


# --- messages ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CookieRequest:
    nonce: bytes


@dataclass(frozen=True, slots=True)
class CookieReply:
    nonce: bytes
    cookie: bytes
    observed: Endpoint
    server_key: bytes  # the server's static X25519 key, unauthenticated (see the docstring)


@dataclass(frozen=True, slots=True)
class Request:
    """A node request, opened: `static` is the key the Noise X message proved, the body is
    already parsed per `kind`."""

    kind: int
    network: bytes
    static: bytes
    counter: int
    nonce: bytes
    cookie: bytes
    names: tuple[str, ...] = ()  # REGISTER: names to hold; CONNECT: the one name to reach
    lan: tuple[Endpoint, ...] = ()  # REGISTER only


@dataclass(frozen=True, slots=True)
class Peer:
    static: bytes
    endpoint: Endpoint
    seen_ago: int  # seconds since the server last heard the peer
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegisterReply:
    """One page of the answer to REGISTER (type REGISTERED, 0x23), like `CookieReply` answers a
    COOKIE_REQUEST. The client assembles the pages into its `Registered` event
    (`tunnel/path/rendezvous.py`)."""

    nonce: bytes
    observed: Endpoint
    page: int
    pages: int
    peers: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class Listed:
    nonce: bytes
    page: int
    pages: int
    peers: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class Joined:
    nonce: bytes
    peer: Peer


@dataclass(frozen=True, slots=True)
class Left:
    nonce: bytes
    static: bytes


@dataclass(frozen=True, slots=True)
class Introduced:
    nonce: bytes
    static: bytes
    endpoint: Endpoint
    lan: tuple[Endpoint, ...]
    names: tuple[str, ...]
    relay_token: bytes  # RELAY_TOKEN_SIZE; the receiver's secret for relaying to `static`


@dataclass(frozen=True, slots=True)
class Refused:
    nonce: bytes
    code: int
    name: str = ""  # NAME_TAKEN, UNKNOWN_PEER
    holder: bytes = b""  # NAME_TAKEN: static key of the current holder
    counter: int = 0  # STALE_COUNTER: the last counter the server accepted
    cap: int = 0  # NETWORK_FULL: the server's member cap per network


Reply = CookieReply | RegisterReply | Listed | Joined | Left | Introduced | Refused


# --- primitive readers and writers ---------------------------------------------------------
class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def endpoint(self) -> Endpoint:
        family = self.u8()
        if family == 4:
            host = str(ipaddress.IPv4Address(self.take(4)))
        elif family == 6:
            host = str(ipaddress.IPv6Address(self.take(16)))
        else:
            raise DecodeError("bad address family")
        return host, self.u16()

    def name(self) -> str:
        raw = self.take(self.u8())
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError("name not ASCII") from exc
        if not valid_name(text):
            raise DecodeError("invalid name")
        return text

    def names(self, limit: int = MAX_NAMES) -> tuple[str, ...]:
        count = self.u8()
        if count > limit:
            raise DecodeError("too many names")
        return tuple(self.name() for _ in range(count))

    def endpoints(self) -> tuple[Endpoint, ...]:
        count = self.u8()
        if count > MAX_LAN:
            raise DecodeError("too many endpoints")
        return tuple(self.endpoint() for _ in range(count))

    def peer(self) -> Peer:
        return Peer(self.take(KEY_SIZE), self.endpoint(), self.u32(), self.names())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError("trailing bytes")


@functools.lru_cache(maxsize=65_536)  # member lists re-encode the same endpoints every refresh
def encode_endpoint(ep: Endpoint) -> bytes:
    """Raises ValueError for a host that is not an IP literal or a port out of range."""
    addr = ipaddress.ip_address(ep[0])
    if not 0 <= ep[1] <= 0xFFFF:
        raise ValueError(f"port out of range: {ep[1]}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    family = 4 if addr.version == 4 else 6
    return bytes([family]) + addr.packed + ep[1].to_bytes(2, "big")


def _encode_names(names: tuple[str, ...]) -> bytes:
    out = bytearray([len(names)])
    for name in names:
        raw = name.encode("ascii")
        out += bytes([len(raw)]) + raw
    return bytes(out)


def _encode_endpoints(eps: tuple[Endpoint, ...]) -> bytes:
    return bytes([len(eps)]) + b"".join(encode_endpoint(ep) for ep in eps)


def encode_peer(peer: Peer) -> bytes:
    seen = min(max(peer.seen_ago, 0), 0xFFFFFFFF)
    return (
        peer.static
        + encode_endpoint(peer.endpoint)
        + seen.to_bytes(4, "big")
        + _encode_names(peer.names)
    )


# --- unauthenticated exchange --------------------------------------------------------------
def encode_cookie_request(msg: CookieRequest) -> bytes:
    head = bytes([COOKIE_REQUEST]) + msg.nonce
    return head + bytes(COOKIE_REQUEST_SIZE - len(head))


def decode_cookie_request(data: bytes) -> CookieRequest | None:
    if len(data) < COOKIE_REQUEST_SIZE or data[0] != COOKIE_REQUEST:
        return None
    return CookieRequest(data[1 : 1 + NONCE_SIZE])


def encode_cookie_reply(msg: CookieReply) -> bytes:
    return (bytes([COOKIE]) + msg.nonce + msg.cookie + encode_endpoint(msg.observed)
            + msg.server_key)


# --- requests ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The clear part of a request; `sealed` is the Noise X message after it."""

    kind: int
    echo: bytes
    cookie: bytes
    sealed: bytes

    @property
    def prologue(self) -> bytes:
        return LINK_CONTEXT + bytes([self.kind]) + self.echo + self.cookie


def encode_request_header(kind: int, echo: bytes, cookie: bytes) -> bytes:
    return bytes([kind]) + echo + cookie


def decode_request_header(data: bytes) -> RequestHeader | None:
    if len(data) < REQUEST_HEADER_SIZE or data[0] not in (REGISTER, LIST, CONNECT, LEAVE):
        return None
    return RequestHeader(data[0], data[1 : 1 + ECHO_SIZE],
                         data[1 + ECHO_SIZE : REQUEST_HEADER_SIZE], data[REQUEST_HEADER_SIZE:])


def request_prologue(header: bytes) -> bytes:
    """The Noise prologue of a request whose clear header is `header`."""
    return LINK_CONTEXT + header


def encode_request_payload(msg: Request, signer: Ed25519PrivateKey) -> bytes:
    """The plaintext the Noise X message carries, signed. Raises ValueError on invalid names,
    too many names/candidates or a counter out of range."""
    if len(msg.names) > MAX_NAMES or len(msg.lan) > MAX_LAN:
        raise ValueError("too many names or LAN candidates")
    if not 0 <= msg.counter < COUNTER_LIMIT:
        raise ValueError(f"counter out of range: {msg.counter}")
    for name in msg.names:
        if not valid_name(name):
            raise ValueError(f"invalid name {name!r}: use a-z, 0-9, '.', '_', '-' (max 63)")
    body = b""
    if msg.kind == REGISTER:
        body = _encode_names(msg.names) + _encode_endpoints(msg.lan)
    elif msg.kind == CONNECT:
        body = _encode_names(msg.names)[1:]
    elif msg.kind not in (LIST, LEAVE):
        raise ValueError(f"not a request type: {msg.kind:#x}")
    unsigned = msg.network + msg.counter.to_bytes(8, "big") + msg.nonce + body
    return unsigned + signer.sign(_signed(msg.kind, msg.static, msg.cookie, unsigned))


def _signed(kind: int, static: bytes, cookie: bytes, unsigned: bytes) -> bytes:
    return SIGN_CONTEXT + bytes([kind]) + static + cookie + unsigned


def decode_request_payload(header: RequestHeader, static: bytes, plaintext: bytes,
                           ) -> Request | None:
    """Parse an opened request WITHOUT checking the signature (see `verify_request`).
    `static` is the key the Noise message proved."""
    if len(plaintext) < PAYLOAD_HEADER_SIZE + SIGNATURE_SIZE:
        return None
    r = _Reader(plaintext[:-SIGNATURE_SIZE])
    try:
        network, counter, nonce = r.take(KEY_SIZE), r.u64(), r.take(NONCE_SIZE)
        names: tuple[str, ...] = ()
        lan: tuple[Endpoint, ...] = ()
        if header.kind == REGISTER:
            names, lan = r.names(), r.endpoints()
        elif header.kind == CONNECT:
            names = (r.name(),)
        r.end()
    except DecodeError:
        return None
    return Request(header.kind, network, static, counter, nonce, header.cookie, names, lan)


def verify_request(req: Request, plaintext: bytes) -> bool:
    """True when `plaintext` (the opened payload of `req`) carries a valid signature by the
    network whose id it names: the sender is a member."""
    try:
        key = Ed25519PublicKey.from_public_bytes(req.network)
        key.verify(plaintext[-SIGNATURE_SIZE:],
                   _signed(req.kind, req.static, req.cookie, plaintext[:-SIGNATURE_SIZE]))
    except (InvalidSignature, ValueError):
        return False
    return True


# --- replies -------------------------------------------------------------------------------
def reply_prologue(kind: int) -> bytes:
    """The Noise prologue of a sealed reply or push of type `kind`."""
    return LINK_CONTEXT + bytes([kind])


def paginate(peers: list[Peer], room: int = MAX_PAGE_BYTES) -> list[list[bytes]]:
    """Split encoded peer entries into pages of at most `room` bytes (always ≥ 1 page, never
    more than `MAX_PAGES`: a longer list is cut, which a member cap ≤ `MAX_MEMBERS_LIMIT`
    never needs)."""
    pages: list[list[bytes]] = [[]]
    used = 0
    for peer in peers:
        entry = encode_peer(peer)
        if pages[-1] and used + len(entry) > room:
            if len(pages) == MAX_PAGES:
                break
            pages.append([])
            used = 0
        pages[-1].append(entry)
        used += len(entry)
    return pages


def encode_registered(nonce: bytes, observed: Endpoint, page: int, pages: int,
                      entries: list[bytes]) -> bytes:
    return (bytes([REGISTERED]) + nonce + encode_endpoint(observed) + bytes([page, pages])
            + b"".join(entries))


def encode_listed(nonce: bytes, page: int, pages: int, entries: list[bytes]) -> bytes:
    return bytes([LISTED]) + nonce + bytes([page, pages]) + b"".join(entries)


def encode_reply(msg: Reply) -> bytes:
    """Encode one reply (REGISTERED/LISTED from their `peers`; use `paginate` for big lists)."""
    if isinstance(msg, CookieReply):
        return encode_cookie_reply(msg)
    if isinstance(msg, RegisterReply):
        entries = [encode_peer(p) for p in msg.peers]
        return encode_registered(msg.nonce, msg.observed, msg.page, msg.pages, entries)
    if isinstance(msg, Listed):
        return encode_listed(msg.nonce, msg.page, msg.pages, [encode_peer(p) for p in msg.peers])
    if isinstance(msg, Joined):
        return bytes([JOINED]) + msg.nonce + encode_peer(msg.peer)
    if isinstance(msg, Left):
        return bytes([LEFT]) + msg.nonce + msg.static
    if isinstance(msg, Introduced):
        return (bytes([INTRODUCED]) + msg.nonce + msg.static + msg.relay_token
                + encode_endpoint(msg.endpoint) + _encode_endpoints(msg.lan)
                + _encode_names(msg.names))
    detail = b""
    if msg.code == NAME_TAKEN:
        detail = _encode_names((msg.name,))[1:] + msg.holder
    elif msg.code == STALE_COUNTER:
        detail = msg.counter.to_bytes(8, "big")
    elif msg.code == UNKNOWN_PEER:
        detail = _encode_names((msg.name,))[1:]
    elif msg.code == NETWORK_FULL:
        detail = min(msg.cap, 0xFFFF).to_bytes(2, "big")
    return bytes([REFUSED]) + msg.nonce + bytes([msg.code]) + detail


def _peers(r: _Reader) -> tuple[Peer, ...]:
    peers = []
    while r.pos < len(r.data):
        peers.append(r.peer())
    return tuple(peers)


def decode_reply(data: bytes) -> Reply | None:
    """Parse any server-to-node rendezvous message; None when malformed or not one."""
    if not data:
        return None
    r = _Reader(data, 1)
    kind = data[0]
    try:
        nonce = r.take(NONCE_SIZE)
        msg: Reply
        if kind == COOKIE:
            msg = CookieReply(nonce, r.take(COOKIE_SIZE), r.endpoint(), r.take(KEY_SIZE))
        elif kind == REGISTERED:
            observed, page, pages = r.endpoint(), r.u8(), r.u8()
            msg = RegisterReply(nonce, observed, page, pages, _peers(r))
        elif kind == LISTED:
            page, pages = r.u8(), r.u8()
            msg = Listed(nonce, page, pages, _peers(r))
        elif kind == JOINED:
            msg = Joined(nonce, r.peer())
        elif kind == LEFT:
            msg = Left(nonce, r.take(KEY_SIZE))
        elif kind == INTRODUCED:
            static, token = r.take(KEY_SIZE), r.take(RELAY_TOKEN_SIZE)
            msg = Introduced(nonce, static, r.endpoint(), r.endpoints(), r.names(), token)
        elif kind == REFUSED:
            code = r.u8()
            if code == NAME_TAKEN:
                msg = Refused(nonce, code, name=r.name(), holder=r.take(KEY_SIZE))
            elif code == STALE_COUNTER:
                msg = Refused(nonce, code, counter=r.u64())
            elif code == UNKNOWN_PEER:
                msg = Refused(nonce, code, name=r.name())
            elif code == NETWORK_FULL:
                msg = Refused(nonce, code, cap=r.u16())
            else:
                msg = Refused(nonce, code)
        else:
            return None
        r.end()
    except DecodeError:
        return None
    if isinstance(msg, RegisterReply | Listed) and not msg.page < msg.pages:
        return None
    return msg


# --- relay envelopes -----------------------------------------------------------------------
RELAY_TOKEN_SIZE = 16  # bytes; a random secret per introduction and direction
RELAY_ID_SIZE = 16  # bytes; names a grant (2^-128 to guess one)
RELAY_TAG_SIZE = 16  # bytes; a 128-bit MAC of the datagram's length and header
RELAY_TAG_COVERS = 64  # bytes of the datagram under the tag: its session header and then some
RELAY_TO_OVERHEAD = 1 + RELAY_ID_SIZE + RELAY_TAG_SIZE  # 33 bytes
RELAY_FROM_OVERHEAD = 1 + KEY_SIZE  # 33 bytes: never more than RELAY_TO's (no amplification)
_RELAY_ID_PERSON = b"ptrly-id"
_RELAY_TAG_PERSON = b"ptrly-tg"


@functools.lru_cache(maxsize=4096)  # a node wraps every relayed datagram with a few tokens
def relay_grant_id(token: bytes) -> bytes:
    """The public name of the grant whose secret is `token` (what RELAY_TO carries)."""
    return hashlib.blake2s(token, digest_size=RELAY_ID_SIZE, person=_RELAY_ID_PERSON).digest()


def relay_tag(token: bytes, datagram: bytes) -> bytes:
    covered = len(datagram).to_bytes(4, "big") + datagram[:RELAY_TAG_COVERS]
    return hashlib.blake2s(covered, digest_size=RELAY_TAG_SIZE, key=token,
                           person=_RELAY_TAG_PERSON).digest()


def relay_tag_valid(token: bytes, datagram: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(relay_tag(token, datagram), tag)


def encode_relay_to(token: bytes, datagram: bytes) -> bytes:
    """The envelope asking the server to forward `datagram` under the grant of `token`."""
    return bytes([RELAY_TO]) + relay_grant_id(token) + relay_tag(token, datagram) + datagram


def decode_relay_to(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(grant id, tag, datagram), unchecked: the server checks the tag with the grant's token."""
    if len(data) < RELAY_TO_OVERHEAD or data[0] != RELAY_TO:
        return None
    tag_at = 1 + RELAY_ID_SIZE
    return data[1:tag_at], data[tag_at:RELAY_TO_OVERHEAD], data[RELAY_TO_OVERHEAD:]


def encode_relay_from(src_static: bytes, datagram: bytes) -> bytes:
    return bytes([RELAY_FROM]) + src_static + datagram


def decode_relay_from(data: bytes) -> tuple[bytes, bytes] | None:
    if len(data) < RELAY_FROM_OVERHEAD or data[0] != RELAY_FROM:
        return None
    return data[1:RELAY_FROM_OVERHEAD], data[RELAY_FROM_OVERHEAD:]
