"""Batched UDP reads: the C extension `_udpio.c` (recvmmsg) where it was built, else its twin.

Both have one function, `recv_batch(sock, count) -> [(data, (host, port), segment), ...]`, and
return a list shorter than `count` once the socket is empty (the C one without an exception).
`PTUNNEL_PURE=1` forces the twin, as it forces the rest of the pure build; `IMPLEMENTATION`
says which runs ("c" or "python").
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Final

from tunnel import data_plane
from tunnel.addresses import Addr

__all__ = ["IMPLEMENTATION", "MAX_BATCH", "recv_batch"]


_selected: Final = data_plane("tunnel.node._udpio", "tunnel.node.udpio_pure")
IMPLEMENTATION: Final = _selected[0]
_implementation: Final = _selected[1]
MAX_BATCH: Final[int] = _implementation.MAX_BATCH
recv_batch: Final[Callable[[socket.socket, int], list[tuple[bytes, Addr, int]]]] = (
    _implementation.recv_batch
)
