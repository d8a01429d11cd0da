"""Batched UDP reads: the C extension `_udpio.c` (recvmmsg) where it was built, else its twin.

Both have one function, `recv_batch(sock, count) -> [(data, (host, port), segment), ...]`, and
return a list shorter than `count` once the socket is empty (the C one without an exception).
`PTUNNEL_PURE=1` forces the twin, as it forces the rest of the pure build; `IMPLEMENTATION`
says which runs ("c" or "python").
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable
from typing import Any, Final

from tunnel.addresses import Addr

__all__ = ["IMPLEMENTATION", "MAX_BATCH", "recv_batch"]


def _select() -> tuple[str, Any]:
    # importlib, not `if TYPE_CHECKING: ... else: try: from ...`: mypyc compiles this module,
    # and takes the branch mypy sees as the only one.
    if os.environ.get("PTUNNEL_PURE") != "1":
        try:
            return "c", importlib.import_module("tunnel.node._udpio")
        except ImportError:  # not built here (no C compiler at install)
            pass
    return "python", importlib.import_module("tunnel.node.udpio_pure")


IMPLEMENTATION, _implementation = _select()
MAX_BATCH: Final[int] = _implementation.MAX_BATCH
recv_batch: Final[Callable[[socket.socket, int], list[tuple[bytes, Addr, int]]]] = (
    _implementation.recv_batch
)
