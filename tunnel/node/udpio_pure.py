"""Read many UDP datagrams per call in pure Python: the twin of the C extension `_udpio.c`.

`recv_batch(sock, count)` returns up to `count` (at most MAX_BATCH) datagrams or GRO
super-datagrams as `(data, (host, port), segment size or 0)`, and `[]` when there is none.
Python has no recvmmsg, so this is one `recvmsg` per datagram, and the one that finds the socket
empty costs a BlockingIOError; a list shorter than `count` tells the caller not to ask again.

`fresh_buffer(size)` is a bytearray of `size` bytes to read into; Python can only make it zeroed.
"""

from __future__ import annotations

import socket
from typing import Final

from tunnel.addresses import Addr

MAX_BATCH: Final = 32
_RECV_SIZE: Final = 65535  # the largest UDP payload, and what GRO may coalesce into
_SOL_UDP: Final = 17
_UDP_GRO: Final = 104
_GRO_CMSG_SPACE: Final = socket.CMSG_SPACE(4)


def recv_batch(sock: socket.socket, count: int) -> list[tuple[bytes, Addr, int]]:
    """See the module docstring; an error with nothing read raises OSError, as recvmsg does."""
    out: list[tuple[bytes, Addr, int]] = []
    for _ in range(min(count, MAX_BATCH)):
        try:
            data, ancillary, _flags, raw_addr = sock.recvmsg(_RECV_SIZE, _GRO_CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            if out:
                break  # the error is consumed; report what was read, the next call goes on
            raise
        segment = 0
        for level, kind, value in ancillary:
            if level == _SOL_UDP and kind == _UDP_GRO:
                segment = int.from_bytes(value[:4], "little")
        out.append((data, (raw_addr[0], raw_addr[1]), segment))
    return out


def fresh_buffer(size: int) -> bytearray:
    """A buffer of `size` bytes for a read to fill (the C twin leaves it unzeroed)."""
    if size < 0:
        raise ValueError("negative buffer size")
    return bytearray(size)
