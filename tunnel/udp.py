"""The UDP socket and the one timer of a node: the only place the protocol meets the event loop.

`now` everywhere is `time.monotonic()`: uvloop's `loop.time()` has 1 ms resolution, too coarse
for RTT estimates and pacing (aioquic on uvloop collapses from 24 to 2.3 MB/s because of it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger(__name__)

Addr = tuple[str, int]
SOCKET_BUFFER = 4 * 1024 * 1024  # bytes; absorbs bursts while Python is busy elsewhere


def monotonic() -> float:
    return time.monotonic()


class UdpEndpoint(asyncio.DatagramProtocol):
    """A bound UDP socket feeding every datagram to `on_datagram(data, addr)`."""

    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self._on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0

    @classmethod
    async def open(cls, bind: Addr, on_datagram: Callable[[bytes, Addr], None]) -> UdpEndpoint:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(lambda: cls(on_datagram), local_addr=bind)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: cast, don't check.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError as exc:  # a sysctl cap is not fatal: the default still works
                    log.debug("cannot raise socket buffer: %s", exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the path or peer is gone; timers will notice.
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, addr: Addr) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.transport.sendto(data, addr)
        except OSError as exc:
            self.send_errors += 1
            log.debug("udp send to %s failed: %s", addr, exc)

    @property
    def local_addr(self) -> Addr:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Timer:
    """One re-armable deadline on the monotonic clock (the sans-IO machines' `get_timer()`)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def arm(self, deadline: float | None) -> None:
        if deadline == self._deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - monotonic())
            self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._deadline = None
        self._callback()

    def cancel(self) -> None:
        self.arm(None)
