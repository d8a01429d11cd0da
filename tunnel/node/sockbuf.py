"""UDP socket buffers as large as asked, or one warning that says how to allow them.

Linux caps SO_RCVBUF and SO_SNDBUF at the sysctls `net.core.rmem_max` and `net.core.wmem_max`
(212,992 bytes on many kernels) without an error: a node asking for 4 MiB silently gets 208 KiB.
A receive buffer that small overflows while the process is busy for a moment, and every datagram
it drops is a retransmission: on loopback with 65,000-byte datagrams the tunnel moved 641 MB/s
with 208 KiB against about 900 with 4 MiB (`python -m bench --only ptunnel`, 2026-12-06). So,
as quic-go does: ask with SO_RCVBUFFORCE / SO_SNDBUFFORCE first, which go past the cap for a
process with CAP_NET_ADMIN (a node run as root, or a service given that capability); else ask
plainly; then read back what the kernel granted, and if it is less than asked, say so once per
process, with the sysctl that allows it.
"""

from __future__ import annotations

import logging
import socket
from typing import Final

log = logging.getLogger(__name__)

# Linux socket options the stdlib does not name (include/uapi/asm-generic/socket.h).
SO_SNDBUFFORCE: Final = 32
SO_RCVBUFFORCE: Final = 33

# (option, its forcing twin, what it is called, the sysctl that caps it)
_DIRECTIONS: Final = (
    (socket.SO_RCVBUF, SO_RCVBUFFORCE, "receive", "net.core.rmem_max"),
    (socket.SO_SNDBUF, SO_SNDBUFFORCE, "send", "net.core.wmem_max"),
)

_warned: set[str] = set()  # the sysctls already named in a warning by this process


def granted(sock: socket.socket, option: int) -> int:
    """The buffer the kernel grants `sock` for `option`, in the bytes a program asks for: Linux
    reports twice the granted size (it counts its own bookkeeping in the buffer too)."""
    return sock.getsockopt(socket.SOL_SOCKET, option) // 2


def _ask(sock: socket.socket, option: int, forced: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, size)  # EPERM without CAP_NET_ADMIN
        return
    except OSError:
        pass
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)  # silently capped at the sysctl
    except OSError as exc:
        log.debug("cannot raise a socket buffer: %s", exc)


def size_buffers(sock: socket.socket, receive: int, send: int | None = None) -> tuple[int, int]:
    """Ask for `receive` bytes of receive buffer and `send` bytes of send buffer (None: leave
    the send buffer as it is); return what was granted (receive, send). A buffer granted smaller
    than asked is named in a warning, once per process and sysctl."""
    result: list[int] = []
    for (option, forced, what, sysctl), size in zip(_DIRECTIONS, (receive, send), strict=True):
        if size is None:
            result.append(granted(sock, option))
            continue
        _ask(sock, option, forced, size)
        got = granted(sock, option)
        result.append(got)
        if got < size and sysctl not in _warned:
            _warned.add(sysctl)
            log.warning(
                "the UDP %s buffer is %s, not the %s asked for (%s caps it): bursts may be "
                "dropped and resent; allow it with `sysctl -w %s=%d` as root",
                what, _kib(got), _kib(size), sysctl, sysctl, size)
    return result[0], result[1]


def _kib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB" if size % (1 << 20) == 0 else f"{size // 1024:,} KiB"
