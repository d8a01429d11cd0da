"""The rendezvous link's sealed datagrams, both halves (wire format in `rendezvous/protocol.py`).

| direction      | Noise pattern (`tunnel/session/oneway.py`) | here                            |
|----------------|--------------------------------------------|---------------------------------|
| node -> server | X: the node proves its static key          | `seal_request` / `open_request` |
| server -> node | K: only the server writes, only that node reads | `seal_reply` / `open_reply` |

The node (`tunnel/path/rendezvous.py`) and the server (`rendezvous/registry.py`) both import
this module, so the two sides cannot drift apart. Pure: keys and randomness come in as bytes.
`open_*` return None for anything forged, damaged, truncated or of another type, never raise.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rendezvous import protocol as p
from tunnel.session import oneway


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """A request that opened: `request.static` is proven; `signed` says whether the network
    signature (the membership proof) verified."""

    request: p.Request
    signed: bool


def seal_request(msg: p.Request, echo: bytes, signer: Ed25519PrivateKey, static_private: bytes,
                 server_key: bytes, ephemeral_private: bytes) -> bytes:
    """A request as a node sends it. Raises ValueError as `encode_request_payload` does."""
    header = p.encode_request_header(msg.kind, echo, msg.cookie)
    payload = p.encode_request_payload(msg, signer)
    return header + oneway.seal_x(p.request_prologue(header), server_key, static_private,
                                  ephemeral_private, payload)


def open_request(header: p.RequestHeader, server_private: bytes,
                 server_public: bytes) -> OpenedRequest | None:
    """The server's side: open the Noise X message behind a request's clear header."""
    opened = oneway.open_x(header.prologue, server_private, server_public, header.sealed)
    if opened is None:
        return None
    static, plaintext = opened
    req = p.decode_request_payload(header, static, plaintext)
    if req is None:
        return None
    return OpenedRequest(req, p.verify_request(req, plaintext))


def seal_reply(plain: bytes, server_private: bytes, node_key: bytes,
               ephemeral_private: bytes) -> bytes:
    """Seal an encoded reply or push (`protocol.encode_reply` and friends) to one node."""
    kind = plain[0]
    return bytes([kind]) + oneway.seal_k(p.reply_prologue(kind), server_private, node_key,
                                         ephemeral_private, plain[1:])


def open_reply(data: bytes, static_private: bytes, static_public: bytes,
               server_key: bytes) -> p.Reply | None:
    """The node's side: a COOKIE as it is (the only clear reply), anything else only when the
    server holding `server_key` sealed it to us."""
    if not data:
        return None
    if data[0] == p.COOKIE:
        return p.decode_reply(data)
    plain = oneway.open_k(p.reply_prologue(data[0]), static_private, static_public, server_key,
                          data[1:])
    if plain is None:
        return None
    msg = p.decode_reply(bytes([data[0]]) + plain)
    return None if isinstance(msg, p.CookieReply) else msg
