"""The UDP socket and the one timer of a node: the only place the protocol meets the event loop.

Reading: one drain per readiness event. The reader callback reads the socket with
`udpio.recv_batch` (recvmmsg in C where built: up to 32 datagrams a system call, and a short
batch, not an exception, says the socket is empty), up to `READ_BATCH` datagrams, hands each to
`on_datagram(data, addr, segment)` and then calls `on_drained()` once: the node flushes its
machines there, in the same callback, not once per datagram. With UDP GRO (`UDP_GRO`, Linux)
one datagram may be many coalesced ones of `segment` bytes each (the last may be shorter; 0:
not coalesced); the receiver opens them in one call (`Device.receive_batch`). The segment size
comes in a control message, which asyncio's `DatagramProtocol` never shows, hence `add_reader`
here (asyncio also reads datagrams with a 256 KiB buffer each).

Writing: `send_segments` hands a buffer of equal-sized datagrams (a sealed run; the last may be
shorter) to the kernel in one `sendmsg` with UDP GSO (`UDP_SEGMENT`); `send_batch` does the same
for a list, coalescing runs. Without GSO, one `sendto` each. A full socket buffer queues the
rest and waits for writability, never blocks.

Path MTU: the socket sets "don't fragment" (`IP_PMTUDISC_DO`), so an oversized probe fails
instead of being fragmented, which is what lets the node learn how large a datagram a path
carries (DPLPMTUD, RFC 8899).

`now` everywhere is `monotonic()` below, a nanosecond clock: uvloop's `loop.time()` has 1 ms
resolution, too coarse for RTT estimates and pacing (aioquic on uvloop collapses from 24 to
2.3 MB/s because of it). It is Linux's boot-time clock, which counts a suspend where
CLOCK_MONOTONIC (`time.monotonic()`) stops: after a laptop slept, its keys, channels and paths
are as old as they are, and the node knows at once what the peer gave up meanwhile. Linux's own
WireGuard ages its keys on the same clock (`ktime_get_coarse_boottime_ns`) for this reason.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from tunnel.addresses import Addr, format_endpoint
from tunnel.node.sockbuf import size_buffers
from tunnel.node.udpio import MAX_BATCH, recv_batch

log = logging.getLogger(__name__)

SOCKET_BUFFER: Final = 4 * 1024 * 1024  # bytes; absorbs bursts while Python is busy elsewhere
READ_BATCH: Final = 256  # datagrams (or GRO super-datagrams) per reader callback
MAX_GSO_SEGMENTS: Final = 64  # Linux accepts up to 64 (UDP_MAX_SEGMENTS; 128 from 6.x) per send
MAX_GSO_BYTES: Final = 65000  # bytes per GSO send: the total must fit one UDP length field
TIMER_SLACK: Final = 0.0005  # s; re-arming for a deadline this much later is not worth a new handle
# s; how early uvloop may run a timer: it counts whole milliseconds of a clock it reads once a
# loop turn, and a delay under half a millisecond becomes `call_soon`
TIMER_EARLY: Final = 0.001
MAX_QUEUED: Final = 4096  # datagrams waiting for a full socket buffer, then dropped (as UDP does)

# Linux socket options the stdlib does not name (include/uapi/linux/udp.h, in.h).
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
UDP_GRO: Final = 104
IP_MTU_DISCOVER: Final = 10
IP_PMTUDISC_DO: Final = 2
IPV6_MTU_DISCOVER: Final = 23
IPV6_PMTUDISC_DO: Final = 2


# CLOCK_BOOTTIME where the platform has it (Linux); elsewhere the clock `time.monotonic()` reads.
CLOCK: Final = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
# s; a timer this late means the process did not run (a sleep, SIGSTOP): see `Timer.overdue`.
OVERDUE: Final = 1.0


def monotonic() -> float:
    return time.clock_gettime(CLOCK)


# What a socket hands its owner: a datagram, where from, and its GRO segment size (0: one).
OnDatagram = Callable[[bytes, Addr, int], None]


class DatagramOut(Protocol):
    """What a node sends through: its `UdpEndpoint`, or a test's in-memory wire."""

    def send_batch(self, datagrams: list[bytes], addr: Addr) -> None: ...

    def send_segments(self, data: bytes, segment: int, addr: Addr) -> None: ...

    def close(self) -> None: ...


class UdpEndpoint:
    """A bound, non-blocking UDP socket calling `on_datagram(data, addr, segment)` per datagram
    (or GRO super-datagram) and `on_drained()` once after each drain."""

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: OnDatagram,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self._on_datagram = on_datagram
        self._on_drained = on_drained
        self._loop = asyncio.get_running_loop()
        self._queue: deque[tuple[bytes, Addr, int]] = deque()  # (data, addr, gso segment size)
        self._writing = False
        self._closed = False
        self.gro = self._enable(SOL_UDP, UDP_GRO, 1)
        self.gso = self._probe_gso()
        self.send_errors = 0
        self.dropped = 0
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    async def open(
        cls, bind: Addr, on_datagram: OnDatagram, on_drained: Callable[[], None] | None = None
    ) -> UdpEndpoint:
        return cls.bind(bind, on_datagram, on_drained)

    @classmethod
    def bind(
        cls, bind: Addr, on_datagram: OnDatagram, on_drained: Callable[[], None] | None = None
    ) -> UdpEndpoint:
        """Bind a socket now (inside a running loop) and start reading it."""
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        size_buffers(sock, SOCKET_BUFFER, SOCKET_BUFFER)  # capped: a warning, not an error
        level, option, value = ((socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
                                if family == socket.AF_INET
                                else (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO))
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:
            log.debug("cannot set don't-fragment: %s", exc)
        try:
            sock.bind(bind)
        except OSError:
            sock.close()
            raise
        return cls(sock, on_datagram, on_drained)

    def _enable(self, level: int, option: int, value: int) -> bool:
        try:
            self.sock.setsockopt(level, option, value)
        except OSError:
            return False
        return True

    def _probe_gso(self) -> bool:
        # Setting a per-socket segment size proves the kernel has GSO; 0 turns it back off.
        return self._enable(SOL_UDP, UDP_SEGMENT, 1200) and self._enable(SOL_UDP, UDP_SEGMENT, 0)

    # --- reading ------------------------------------------------------------------------------

    def _readable(self) -> None:
        sock, deliver = self.sock, self._on_datagram
        budget = READ_BATCH
        try:
            while budget > 0:
                try:
                    batch = recv_batch(sock, min(budget, MAX_BATCH))
                except OSError as exc:  # ICMP errors of earlier sends surface here; not fatal
                    log.debug("udp receive: %s", exc)
                    budget -= 1
                    continue
                for data, addr, segment in batch:
                    deliver(data, addr, segment)
                if len(batch) < min(budget, MAX_BATCH):
                    break  # drained: the next datagram wakes us again
                budget -= len(batch)
        finally:
            # Even if a delivery raised: what the earlier ones fed the machines goes out.
            if self._on_drained is not None:
                self._on_drained()

    # --- writing ------------------------------------------------------------------------------

    def send_segments(self, data: bytes, segment: int, addr: Addr) -> None:
        """Send `data`, datagrams of `segment` bytes back to back (the last may be shorter),
        in one GSO send; one `sendto` each without GSO."""
        if len(data) <= segment:
            self._send(data, addr, 0)
        elif self.gso:
            self._send(data, addr, segment)
        else:
            for offset in range(0, len(data), segment):
                self._send(data[offset:offset + segment], addr, 0)

    def send_batch(self, datagrams: list[bytes], addr: Addr) -> None:
        """Send datagrams to one address, coalescing equal-sized runs with GSO."""
        if not self.gso or len(datagrams) < 2:
            for data in datagrams:
                self._send(data, addr, 0)
            return
        index, count = 0, len(datagrams)
        while index < count:
            size = len(datagrams[index])
            end = index + 1
            # nested 2-argument min: compiled, inline; a 3-argument one is a generic call
            limit = min(count, index + min(MAX_GSO_SEGMENTS, max(1, MAX_GSO_BYTES // size)))
            while end < limit and len(datagrams[end]) == size:
                end += 1
            if end < count and end < limit and len(datagrams[end]) < size:
                end += 1  # GSO allows a shorter last segment
            if end - index == 1:
                self._send(datagrams[index], addr, 0)
            else:
                self._send(b"".join(datagrams[index:end]), addr, size)
            index = end

    def _send(self, data: bytes, addr: Addr, segment: int) -> None:
        if self._closed:
            return
        if self._queue:
            self._enqueue(data, addr, segment)
            return
        try:
            if segment:
                self.sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment))],
                                  0, addr)
            else:
                self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, addr, segment)
        except OSError as exc:
            self._send_failed(exc, data, addr, segment)

    def _send_failed(self, exc: OSError, data: bytes, addr: Addr, segment: int) -> None:
        if segment and exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
            # Some devices refuse GSO (checksum offload off): fall back for good.
            log.info("udp: GSO refused (%s); sending one datagram per call", exc.strerror)
            self.gso = False
            for offset in range(0, len(data), segment):
                self._send(data[offset:offset + segment], addr, 0)
            return
        self.send_errors += 1
        log.debug("udp send to %s failed: %s", format_endpoint(addr), exc)

    def _enqueue(self, data: bytes, addr: Addr, segment: int) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.append((data, addr, segment))
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        while self._queue:
            data, addr, segment = self._queue[0]
            try:
                if segment:
                    self.sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT,
                                                struct.pack("=H", segment))], 0, addr)
                else:
                    self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._queue.popleft()
                self._send_failed(exc, data, addr, segment)
                continue
            self._queue.popleft()
        self._writing = False
        self._loop.remove_writer(self.sock.fileno())

    @property
    def local_addr(self) -> Addr:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        if self._writing:
            self._loop.remove_writer(self.sock.fileno())
        self.sock.close()


class Timer:
    """One re-armable deadline on the monotonic clock (the sans-IO machines' `get_timer()`)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        # Looked up once: each asyncio.get_running_loop() costs a getpid() system call (2 % of
        # the sender's samples when it ran at every re-arm, thousands a second).
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, deadline: float | None) -> None:
        current = self._deadline
        if deadline == current or (
            deadline is not None and current is not None
            and current <= deadline < current + TIMER_SLACK
        ):
            return  # the armed timer fires in time; the handler re-arms for what is left
        self._set(deadline)

    def _set(self, deadline: float | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._deadline = deadline
        if deadline is not None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._handle = self._loop.call_later(max(0.0, deadline - monotonic()), self._fire)

    def overdue(self, now: float) -> bool:
        """The armed deadline passed more than OVERDUE ago: the process did not run meanwhile
        (a laptop asleep, SIGSTOP), since a running loop fires a timer within milliseconds."""
        deadline = self._deadline
        return deadline is not None and now - deadline > OVERDUE

    def _fire(self) -> None:
        self._handle = None
        self._deadline = None
        self._callback()

    def cancel(self) -> None:
        self._set(None)
