"""The load generator: bulk throughput, request/response latency, connect-to-first-byte.

Every path is measured by these same functions against the same sink/echo server (sinkproto.py).
Bulk sends for a fixed time (so a 25 MB/s path and a 3 GB/s path both finish on schedule) and is
timed until the sink confirms the byte count, so data still queued in a tunnel is counted and
waited for, never assumed delivered.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from bench.sinkproto import END_RECORD, MODE_ECHO, MODE_SINK, TOTAL, AckReader, record

HOST = "127.0.0.1"
RECORD_PAYLOAD = 1 << 20  # 1 MiB a record: the 4-byte header is noise, one sendall per record
DRAIN_TIMEOUT_S = 60.0  # the last window of a slow tunnel must arrive within this
# Unconfirmed payload bytes allowed in a tunnel, shared by the parallel streams: at least
# WINDOW_BYTES, and grown to WINDOW_SECONDS of the rate confirmed so far. Some tunnels (ssh -L
# across namespaces) hold megabytes in their buffers, so a fixed small window would measure
# their buffering instead of their throughput; a fixed large one would leave a 2 MB/s path a
# minute of data to drain. A window worth a second of delivery does neither.
WINDOW_BYTES = 8 << 20
WINDOW_SECONDS = 1.0
LATENCY_WARMUP = 100  # round trips not recorded: first connection set-up, caches, cwnd
MESSAGE_SIZE = 64  # bytes per request and per response, as in the issue
IO_TIMEOUT_S = 10.0


class LoadError(Exception):
    """The path broke during a measurement (reset, timeout, short answer)."""


LOAD_ERRORS = (OSError, LoadError)  # what a broken path raises out of the functions below


SETUP_TIMEOUT_S = 5.0  # a connection not up end to end by then is retried (hyperdht: ~1 in 6)
SETUP_ATTEMPTS = 3  # connection set-up is measured elsewhere; bulk only needs working streams


@dataclass(frozen=True, slots=True)
class BulkResult:
    bytes_moved: int  # payload bytes the sink confirmed
    seconds: float  # from the first byte sent to the last confirmation
    setup_retries: int = 0  # connections that had to be opened again before the clock started

    @property
    def rate(self) -> float:
        return self.bytes_moved / self.seconds if self.seconds > 0 else 0.0


def _connect(port: int, timeout: float = IO_TIMEOUT_S, nodelay: bool = True,
             host: str = HOST) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        data = sock.recv(size - len(chunks))
        if not data:
            raise LoadError(f"connection closed after {len(chunks)} of {size} bytes")
        chunks += data
    return bytes(chunks)


def open_sink(port: int, host: str = HOST) -> tuple[socket.socket, int]:
    """A sink connection proven up end to end (the sink's first zero total arrived); retries."""
    last = ""
    for attempt in range(SETUP_ATTEMPTS):
        sock: socket.socket | None = None
        try:
            sock = _connect(port, timeout=SETUP_TIMEOUT_S, nodelay=False, host=host)
            sock.sendall(MODE_SINK)
            if _recv_exact(sock, TOTAL.size) == TOTAL.pack(0):
                return sock, attempt
            last = "sink sent a wrong greeting"
        except LOAD_ERRORS as exc:
            last = f"{type(exc).__name__}: {exc}"
        if sock is not None:
            sock.close()
    raise LoadError(f"no working connection after {SETUP_ATTEMPTS} attempts ({last})")


def bulk(port: int, seconds: float, streams: int = 1, host: str = HOST) -> BulkResult:
    """Send for `seconds` on `streams` parallel connections; bytes the sink counted per second."""
    payload = record(RECORD_PAYLOAD)
    min_window = max(RECORD_PAYLOAD, WINDOW_BYTES // streams)
    opened = [open_sink(port, host) for _ in range(streams)]
    socks = [sock for sock, _ in opened]
    start_gate = threading.Barrier(streams + 1)
    totals: list[int] = [0] * streams
    ends: list[float] = [0.0] * streams
    errors: list[str] = []

    def one(i: int, sock: socket.socket, deadline_holder: list[float]) -> None:
        acks = AckReader()
        sent = 0

        def wait_ack() -> None:
            data = sock.recv(4096)
            if not data:
                raise LoadError(f"sink connection closed with {sent - acks.acked} bytes unacked")
            acks.feed(data)

        try:
            start_gate.wait()
            deadline = deadline_holder[0]
            sock.settimeout(DRAIN_TIMEOUT_S)
            began = time.perf_counter()
            while (now := time.perf_counter()) < deadline:
                rate = acks.acked / max(now - began, 1e-3)
                while sent - acks.acked >= max(min_window, int(rate * WINDOW_SECONDS)):
                    wait_ack()
                sock.sendall(payload)
                sent += RECORD_PAYLOAD
                # A socket with a timeout polls for readability before recv, even with
                # MSG_DONTWAIT: make this one look really non-blocking.
                sock.settimeout(0.0)
                try:
                    acks.feed(sock.recv(4096))
                except BlockingIOError:
                    pass  # no confirmation waiting: keep sending
                finally:
                    sock.settimeout(DRAIN_TIMEOUT_S)
            sock.sendall(END_RECORD)
            while acks.acked < sent:
                wait_ack()
            totals[i] = acks.acked
            ends[i] = time.perf_counter()
        except (OSError, LoadError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            ends[i] = time.perf_counter()
            start_gate.abort()

    holder = [0.0]
    threads = [threading.Thread(target=one, args=(i, s, holder)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    begin = time.perf_counter()
    holder[0] = begin + seconds
    try:
        start_gate.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    if errors:
        raise LoadError(errors[0])
    return BulkResult(sum(totals), max(ends) - begin, sum(retries for _, retries in opened))


def latency(port: int, round_trips: int) -> list[float]:
    """Round-trip times in microseconds of `round_trips` 64-byte ping-pongs on one connection."""
    message = bytes(range(MESSAGE_SIZE))
    samples: list[float] = []
    clock = time.perf_counter_ns
    with _connect(port) as sock:
        sock.sendall(MODE_ECHO)
        for i in range(LATENCY_WARMUP + round_trips):
            t0 = clock()
            sock.sendall(message)
            got = 0
            while got < MESSAGE_SIZE:
                data = sock.recv(MESSAGE_SIZE - got)
                if not data:
                    raise LoadError("echo connection closed")
                got += len(data)
            if i >= LATENCY_WARMUP:
                samples.append((clock() - t0) / 1000.0)
    return samples


def first_byte(port: int, timeout: float) -> float | None:
    """Seconds from a new TCP connect to the first echoed byte, or None if it did not arrive."""
    t0 = time.perf_counter()
    try:
        with _connect(port, timeout=timeout) as sock:
            sock.sendall(MODE_ECHO + b"x")
            if sock.recv(1) != b"x":
                return None
    except OSError:
        return None
    return time.perf_counter() - t0


def first_byte_since(port: int, started: float, timeout: float) -> float | None:
    """Seconds from `started` (a perf_counter time, e.g. when a tunnel client was launched) to
    the first byte echoed through `port`, retrying refused connects while the client starts."""
    deadline = started + timeout
    while time.perf_counter() < deadline:
        try:
            with _connect(port, timeout=max(0.01, deadline - time.perf_counter())) as sock:
                sock.sendall(MODE_ECHO + b"x")
                if sock.recv(1) == b"x":
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.002)  # a refused connect: the client is not listening yet
    return None


def open_idle(port: int, count: int, max_failures: int = 0, timeout: float = IO_TIMEOUT_S,
              budget: float | None = None) -> tuple[list[socket.socket], int]:
    """`count` echo connections, each proven open end to end by one echoed byte, left idle,
    and how many attempts failed on the way. LoadError once more than `max_failures` did, or
    when they are not all open within `budget` seconds."""
    socks: list[socket.socket] = []
    failures = 0
    give_up = None if budget is None else time.monotonic() + budget
    try:
        while len(socks) < count:
            if give_up is not None and time.monotonic() > give_up:
                raise LoadError(f"only {len(socks)} of {count} open after {budget:.0f} s "
                                f"({failures} connects failed)")
            sock: socket.socket | None = None
            try:
                sock = _connect(port, timeout=timeout)
                sock.sendall(MODE_ECHO + b"x")
                if _recv_exact(sock, 1) != b"x":
                    raise LoadError("idle connection echoed the wrong byte")
                socks.append(sock)
            except LOAD_ERRORS as exc:
                if sock is not None:
                    sock.close()
                failures += 1
                if failures > max_failures:
                    raise LoadError(f"{failures} of {len(socks) + failures} connections "
                                    f"failed, last: {type(exc).__name__}: {exc}") from exc
    except LoadError:
        for open_sock in socks:
            open_sock.close()
        raise
    return socks, failures
