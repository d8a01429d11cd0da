"""The batched transport data plane in pure Python: the twin of the C extension `_datapath.c`.

Same API, same bytes, same verdicts (tests/session/test_datapath.py runs both); `datapath.py`
chooses one at import. Layout of transport data (`wire.py`, WireGuard's)::

    | 0 type=4 | 1-3 zero | 4 receiver index (u32) | 8 counter (u64 LE) | 16 AEAD(payload) |

AEAD is the transport cipher the keys' handshake negotiated (`params.py`): ChaCha20-Poly1305 or
AES-256-GCM (`cryptography`), both with nonce = 4 zero bytes || counter LE, no associated data
and a 16-byte tag. `open_batch` splits a GRO buffer into segments and judges each one:

| verdict       | meaning                                                                        |
|---------------|--------------------------------------------------------------------------------|
| OK            | authenticated and new: the plaintext                                           |
| NOT_TRANSPORT | type byte is not 4 (or empty): the raw segment, for the caller to route       |
| MALFORMED     | shorter than 32 B, longer than 65,507 B, or reserved bytes not zero            |
| UNKNOWN_INDEX | no key under that receiver index                                               |
| STALE         | the key expired (`now >= expires`)                                             |
| BAD_TAG       | forged or damaged                                                              |
| REPLAY        | authentic, but a replay, too old, or at the key's counter limit (`replay.py`;  |
|               | `Opener.limit`, lower for AES-256-GCM keys: `constants.py`)                    |

A dropped segment changes no state: the window is updated only after the tag checked out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tunnel.session.constants import REJECT_AFTER_MESSAGES
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305
from tunnel.session.replay import WINDOW_SIZE, ReplayWindow
from tunnel.session.wire import (
    HEADER_TRANSPORT,
    KEY_SIZE,
    MAX_DATAGRAM_SIZE,
    MAX_PAYLOAD_SIZE,
    MESSAGE_TRANSPORT,
    TRANSPORT_MIN_SIZE,
    Payload,
    payload_bytes,
)

__all__ = [
    "AES_256_GCM", "CHACHA20_POLY1305", "WINDOW_SIZE", "Opener", "ReplayWindow", "Sealer",
    "open_batch",
]

_NONCE_PREFIX: Final = b"\x00\x00\x00\x00"
_HEADER_SIZE: Final = 8  # type, 3 zero bytes, receiver index: what a Sealer puts before the counter

OK: Final = 0
NOT_TRANSPORT: Final = 1
MALFORMED: Final = 2
UNKNOWN_INDEX: Final = 3
STALE: Final = 4
BAD_TAG: Final = 5
REPLAY: Final = 6


def _aead(key: bytes, cipher: int) -> ChaCha20Poly1305 | AESGCM:
    """The AEAD object of one key: both kinds seal and open with the same calls and layout."""
    if len(key) != KEY_SIZE:
        raise ValueError("a transport key is 32 bytes")
    if cipher == AES_256_GCM:
        return AESGCM(bytes(key))  # a 32-byte key: AES-256
    if cipher == CHACHA20_POLY1305:
        return ChaCha20Poly1305(bytes(key))
    raise ValueError("unknown transport cipher")


class Sealer:
    """The sending half of a keypair: its AEAD object is made once."""

    __slots__ = ("_aead", "_header")

    def __init__(self, key: bytes, header: bytes, cipher: int) -> None:
        aead = _aead(key, cipher)
        if len(header) != _HEADER_SIZE:
            raise ValueError("a transport header is 8 bytes")
        self._aead = aead
        self._header = bytes(header)

    def seal(self, payload: Payload, counter: int) -> bytes:
        """The transport datagram of `payload` under `counter`."""
        if not 0 <= counter < 2**64 - 1:
            raise ValueError("counter out of range")
        data = payload_bytes(payload)
        if len(data) > MAX_PAYLOAD_SIZE:
            raise ValueError("payload longer than a datagram carries")
        counter_bytes = counter.to_bytes(8, "little")
        return self._header + counter_bytes + self._aead.encrypt(
            _NONCE_PREFIX + counter_bytes, data, None)

    def seal_batch(self, payloads: Sequence[Payload], counter: int) -> bytes:
        """The datagrams of `payloads[i]` under `counter + i`, back to back."""
        if counter < 0 or counter + len(payloads) > 2**64 - 1:
            raise ValueError("counter out of range")
        encrypt, header = self._aead.encrypt, self._header
        out = []
        for data in map(payload_bytes, payloads):
            if len(data) > MAX_PAYLOAD_SIZE:
                raise ValueError("payload longer than a datagram carries")
            counter_bytes = counter.to_bytes(8, "little")
            out.append(header + counter_bytes + encrypt(_NONCE_PREFIX + counter_bytes,
                                                        data, None))
            counter += 1
        return b"".join(out)


class Opener:
    """The receiving half of a keypair, its replay window and its counter limit."""

    __slots__ = ("_aead", "expires", "limit", "replay")

    def __init__(
        self, key: bytes, expires: float, cipher: int, limit: int = REJECT_AFTER_MESSAGES
    ) -> None:
        self._aead = _aead(key, cipher)
        if not 0 <= limit < 2**64:
            raise ValueError("limit out of range")
        self.expires = expires  # from this `now` on, nothing is accepted under this key
        self.limit = limit  # counters at or past this are refused (the keypair's reject_counter)
        self.replay = ReplayWindow()


class HasOpener(Protocol):
    """What `open_batch`'s table maps a receiver index to (a session's `Keypair`)."""

    @property
    def receive(self) -> Opener: ...


Owner = TypeVar("Owner", bound=HasOpener)


def open_batch(
    table: Mapping[bytes, Owner], data: bytes, segment: int, now: float
) -> list[tuple[int, Owner | None, bytes]]:
    """Split `data` into segments of `segment` bytes (the last may be shorter; 0: one datagram)
    and judge each: `(verdict, owner or None, plaintext or raw segment or b"")`.

    `table` maps receiver indices to keypairs; it must be a dict (the C twin reads it as one).
    """
    total = len(data)
    if segment <= 0 or segment >= total:
        segments = [data]
    else:
        segments = [data[offset:offset + segment] for offset in range(0, total, segment)]
    lookup = table.get
    results: list[tuple[int, Owner | None, bytes]] = []
    append = results.append
    # `Opener.judge`, written out: this runs once per packet.
    for datagram in segments:
        size = len(datagram)
        if size == 0 or datagram[0] != MESSAGE_TRANSPORT:
            append((NOT_TRANSPORT, None, bytes(datagram)))
        elif (size < TRANSPORT_MIN_SIZE or size > MAX_DATAGRAM_SIZE
              or datagram[:4] != HEADER_TRANSPORT):
            append((MALFORMED, None, b""))
        elif (owner := lookup(datagram[4:8])) is None:
            append((UNKNOWN_INDEX, None, b""))
        else:
            opener = owner.receive
            if now >= opener.expires:
                append((STALE, owner, b""))
                continue
            counter_bytes = datagram[8:16]
            try:
                payload = opener._aead.decrypt(_NONCE_PREFIX + counter_bytes, datagram[16:], None)
            except InvalidTag:
                append((BAD_TAG, owner, b""))
                continue
            if opener.replay.accept(int.from_bytes(counter_bytes, "little"), opener.limit):
                append((OK, owner, payload))
            else:
                append((REPLAY, owner, b""))
    return results
