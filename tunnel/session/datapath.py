"""The batched transport data plane: the C extension where it was built, else its Python twin.

`_datapath.c` (built by `build_datapath.py` where a C compiler and libcrypto were present at
install time) and `datapath_pure.py` have the same API and produce the same bytes and verdicts:

    Sealer(key, header, cipher).seal(payload, counter) / .seal_batch(payloads, counter)  # GSO
    Opener(key, expires, cipher, limit)  # .replay: its ReplayWindow, .expires, .limit
    open_batch(table, data, segment, now) -> [(verdict, owner, payload), ...]  # one GRO buffer
    ReplayWindow().accept(counter, limit=REJECT_AFTER_MESSAGES) -> bool     # RFC 6479

`cipher` is the transport cipher the keys' handshake negotiated (`params.CHACHA20_POLY1305` or
`params.AES_256_GCM`; the datagrams' layout is the same), `limit` the first counter refused
(`Keypair.reject_counter`: lower for AES-256-GCM keys).

`PTUNNEL_PURE=1` forces the twin (the switch that also forces the pure build of the rest).
`IMPLEMENTATION` says which one runs ("c" or "python"), for `ptunnel --version` and the tests.

The rest of the session layer sees the objects only through the protocols below and makes them
with `new_sealer`, `new_opener` and `new_window`: a class of one implementation is never a
static type, so code compiled with mypyc accepts the objects of either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar, cast

from tunnel import data_plane
from tunnel.session.constants import REJECT_AFTER_MESSAGES
from tunnel.session.datapath_pure import (
    BAD_TAG,
    MALFORMED,
    NOT_TRANSPORT,
    OK,
    REPLAY,
    STALE,
    UNKNOWN_INDEX,
)
from tunnel.session.wire import Payload

__all__ = [
    "BAD_TAG", "IMPLEMENTATION", "MALFORMED", "NOT_TRANSPORT", "OK", "REPLAY", "STALE",
    "UNKNOWN_INDEX", "HasOpener", "Opener", "ReplayWindow", "Sealer", "new_opener", "new_sealer",
    "new_window", "open_batch",
]


class Sealer(Protocol):
    """The sending half of a keypair."""

    def seal(self, payload: Payload, counter: int) -> bytes: ...

    def seal_batch(self, payloads: Sequence[Payload], counter: int) -> bytes: ...


class ReplayWindow(Protocol):
    """Which counters of one receiving key have been seen."""

    def accept(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool: ...

    def state(self) -> tuple[int, tuple[int, ...]]: ...


class Opener(Protocol):
    """The receiving half of a keypair and its replay window."""

    @property
    def replay(self) -> ReplayWindow: ...

    @property
    def expires(self) -> float: ...

    @property
    def limit(self) -> int: ...


class HasOpener(Protocol):
    """What `open_batch`'s table maps a receiver index to (a session's `Keypair`)."""

    @property
    def receive(self) -> Opener: ...


Owner = TypeVar("Owner", bound=HasOpener)


_selected: Final = data_plane("tunnel.session._datapath", "tunnel.session.datapath_pure")
IMPLEMENTATION: Final = _selected[0]
_implementation: Final = _selected[1]
new_sealer: Final[Callable[[bytes, bytes, int], Sealer]] = _implementation.Sealer
new_opener: Final[Callable[[bytes, float, int, int], Opener]] = _implementation.Opener
new_window: Final[Callable[[], ReplayWindow]] = _implementation.ReplayWindow
_open_batch: Final[Callable[..., list[tuple[int, Any, bytes]]]] = _implementation.open_batch


def open_batch(
    table: Mapping[bytes, Owner], data: bytes, segment: int, now: float
) -> list[tuple[int, Owner | None, bytes]]:
    """Split `data` into datagrams of `segment` bytes (the last may be shorter; 0: one) and
    judge each: `(verdict, owner or None, plaintext, or the raw datagram for NOT_TRANSPORT)`.
    `table` must be a dict of receiver index -> keypair (the C twin reads it as one)."""
    return cast(list[tuple[int, Owner | None, bytes]], _open_batch(table, data, segment, now))
