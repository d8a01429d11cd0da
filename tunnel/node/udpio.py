"""Batched UDP reads: the C extension `_udpio.c` (recvmmsg) where it was built, else its twin.

Both have one function, `recv_batch(sock, count) -> [(data, (host, port), segment), ...]`, and
return a list shorter than `count` once the socket is empty (the C one without an exception).
`PTUNNEL_PURE=1` forces the twin, as it forces the rest of the pure build; `IMPLEMENTATION`
says which runs ("c" or "python").
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["IMPLEMENTATION", "MAX_BATCH", "recv_batch"]

if TYPE_CHECKING:
    from tunnel.node.udpio_pure import MAX_BATCH, recv_batch

    IMPLEMENTATION: str
elif os.environ.get("PTUNNEL_PURE") == "1":
    from tunnel.node.udpio_pure import MAX_BATCH, recv_batch

    IMPLEMENTATION = "python"
else:
    try:
        from tunnel.node._udpio import MAX_BATCH, recv_batch
    except ImportError:  # not built here (no C compiler at install)
        from tunnel.node.udpio_pure import MAX_BATCH, recv_batch

        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "c"
