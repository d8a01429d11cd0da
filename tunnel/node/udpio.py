"""Batched UDP reads, and buffers for TCP reads: the C extension `_udpio.c` where it was built,
else its twin.

`recv_batch(sock, count) -> [(data, (host, port), segment), ...]` (recvmmsg in C) returns a list
shorter than `count` once the socket is empty (the C one without an exception). `fresh_buffer(size)`
is a bytearray for a read to fill; the C one is not zeroed first (the bridges read TCP into it,
`tunnel.forward.bridge`). `PTUNNEL_PURE=1` forces the twin, as it forces the rest of the pure
build; `IMPLEMENTATION` says which runs ("c" or "python").
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Final

from tunnel import data_plane
from tunnel.addresses import Addr

__all__ = ["IMPLEMENTATION", "MAX_BATCH", "fresh_buffer", "recv_batch"]


_selected: Final = data_plane("tunnel.node._udpio", "tunnel.node.udpio_pure")
IMPLEMENTATION: Final = _selected[0]
_implementation: Final = _selected[1]
MAX_BATCH: Final[int] = _implementation.MAX_BATCH
recv_batch: Final[Callable[[socket.socket, int], list[tuple[bytes, Addr, int]]]] = (
    _implementation.recv_batch
)
fresh_buffer: Final[Callable[[int], bytearray]] = _implementation.fresh_buffer
