"""Receiver indices of one device: random 32-bit names for handshakes and keypairs (sans-IO).

WireGuard's `IndexTable` (wireguard-go `device/indextable.go`; whitepaper section 5.4.2, I_i). Every
handshake we start and every keypair we hold gets a local index, sent to the peer as our
"sender index"; the peer puts it in the "receiver index" field of everything it sends back, so a
response, a cookie reply or a transport datagram finds its state in one dict lookup. Indices are
random rather than counted so they reveal nothing about how many sessions a node has had.

An index names one of two things, and each kind has its own map:

| kind      | maps to                          | looked up by                                    |
|-----------|----------------------------------|-------------------------------------------------|
| handshake | the session awaiting a response  | responses, cookie replies to an initiation      |
| keypair   | the keys of a finished handshake | transport data, cookie replies to a response    |

A new index is unused in both maps. The table is generic in what it maps to (`H`, `K`), so it
knows nothing of `Session` or `Keypair` and no module imports in a circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from tunnel.session.crypto import Rng
from tunnel.session.wire import INDEX_SIZE

H = TypeVar("H")  # what a handshake index names (a session awaiting a response)
K = TypeVar("K")  # what a keypair index names (transport keys)


class IndexTable(Generic[H, K]):
    """Local indices to handshakes and keypairs; see the module docstring.

    Indices are the 4 raw bytes as they appear on the wire, so lookups need no conversion.
    """

    __slots__ = ("_handshakes", "_keypairs", "_rng")

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._handshakes: dict[bytes, H] = {}
        self._keypairs: dict[bytes, K] = {}

    def new_index(self) -> bytes:
        """A random index in use by neither kind; not claimed (see `add_keypair`).

        Draws again on a collision, as wireguard-go does: with 2^32 indices and at most a few
        thousand in use, a second draw is already rare.
        """
        while True:
            index = self._rng(INDEX_SIZE)
            if index not in self._keypairs and index not in self._handshakes:
                return index

    def add_handshake(self, owner: H) -> bytes:
        """A new index naming `owner`'s handshake (the sender index of its initiation)."""
        index = self.new_index()
        self._handshakes[index] = owner
        return index

    def add_keypair(self, index: bytes, keypair: K) -> None:
        """Let `index` name `keypair`.

        `index` comes from `new_index` (responder: it goes into the response before the keypair
        exists) or is a handshake index just removed (initiator: the index the responder already
        knows names the keys from then on).
        """
        self._keypairs[index] = keypair

    def handshake(self, index: bytes) -> H | None:
        """The handshake `index` names, or None."""
        return self._handshakes.get(index)

    def keypair(self, index: bytes) -> K | None:
        """The keypair `index` names, or None."""
        return self._keypairs.get(index)

    @property
    def keypairs(self) -> Mapping[bytes, K]:
        """Read-only view of index -> keypair, for the transport hot path to look up directly."""
        return self._keypairs

    @property
    def handshakes(self) -> Mapping[bytes, H]:
        """Read-only view of index -> pending handshake (for status and tests)."""
        return self._handshakes

    def remove(self, index: bytes) -> None:
        """Free `index`, whichever kind it names; an unknown index is ignored."""
        self._keypairs.pop(index, None)
        self._handshakes.pop(index, None)

    def __contains__(self, index: object) -> bool:
        return index in self._keypairs or index in self._handshakes

    def __len__(self) -> int:
        return len(self._keypairs) + len(self._handshakes)
