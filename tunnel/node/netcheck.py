"""Netcheck and one-shot rendezvous queries for the CLI, over one blocking UDP socket (shell).

Netcheck sends a COOKIE_REQUEST from ONE socket to the rendezvous' main port and to its netcheck
port (PORT+1 by default). Each COOKIE reply carries the source endpoint that port observed:

- same endpoint from both: the NAT maps endpoint-independently (RFC 4787 "EIM"), hole punching
  works with any peer;
- different endpoints: address- or port-dependent mapping (a "symmetric" NAT), punching needs the
  peer to be reachable or falls back to the relay;
- no reply at all: UDP to the rendezvous does not work from here.

`query()` drives a `RendezvousClient` over a blocking socket until a condition holds; `ptunnel
list` uses it (a node's long-running loop lives in `tunnel/node.py`).

Both wait in select(), which a signal that lands just before the call does not interrupt, and
Python runs its handler (the CLI's raises `Interrupted`) only when the main thread next runs
bytecode, which compiled code (this module) never does: `ptunnel list` slept through its 1 s
retry timer before it said "interrupted". So the main thread's waits watch a signal wakeup fd
too (`signal_wakeup`, `wait_readable`), which the C-level handler writes whenever the signal came.
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from rendezvous import protocol as p
from tunnel.addresses import format_endpoint
from tunnel.path.rendezvous import Event, RendezvousClient

log = logging.getLogger(__name__)

PROBE_INTERVAL: Final = 0.5  # seconds between probe retransmissions; well above an Internet RTT
DEFAULT_TIMEOUT: Final = 3.0  # seconds; a UDP-blocking firewall is declared after this much silence


@dataclass(frozen=True, slots=True)
class NetcheckResult:
    udp: bool  # any reply at all
    public_endpoint: p.Endpoint | None
    via_main: p.Endpoint | None  # endpoint observed by the main port
    via_netcheck: p.Endpoint | None  # endpoint observed by the netcheck port
    local_port: int

    @property
    def mapping(self) -> str:
        if self.via_main is None or self.via_netcheck is None:
            return "unknown"
        if self.via_main == self.via_netcheck:
            return "endpoint-independent"
        return "endpoint-dependent"

    def as_dict(self) -> dict[str, object]:
        def fmt(ep: p.Endpoint | None) -> str | None:
            return None if ep is None else format_endpoint(ep)

        return {
            "udp": self.udp,
            "public_endpoint": fmt(self.public_endpoint),
            "observed_by_main_port": fmt(self.via_main),
            "observed_by_netcheck_port": fmt(self.via_netcheck),
            "mapping": self.mapping,
            "local_port": self.local_port,
            "port_preserved": self.public_endpoint is not None
            and self.public_endpoint[1] == self.local_port,
        }


def resolve(addr: tuple[str, int]) -> tuple[str, int]:
    """HOST:PORT to an IP literal and port (raises OSError when the name does not resolve).

    A name with both kinds of address resolves to its IPv4 one: a rendezvous listening on
    0.0.0.0 is the common case, one on [::] (dual-stack) answers IPv4 too, and hole punching
    is IPv4 (`localhost` is ::1 first on most systems, which a 0.0.0.0 server never hears)."""
    infos = socket.getaddrinfo(addr[0], addr[1], socket.AF_UNSPEC, socket.SOCK_DGRAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    host, port = infos[0][4][:2]
    return str(host), int(port)


def family(host: str) -> socket.AddressFamily:
    """The address family of an IP literal (as `resolve` returns)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def any_address(server: tuple[str, int]) -> tuple[str, int]:
    """The wildcard bind address of the family that reaches `server`."""
    return ("::", 0) if family(server[0]) == socket.AF_INET6 else ("0.0.0.0", 0)


def netcheck(server: tuple[str, int], netcheck_port: int | None = None,
             timeout: float = DEFAULT_TIMEOUT, bind: tuple[str, int] | None = None,
             rng: Callable[[int], bytes] | None = None) -> NetcheckResult:
    import os

    rng = rng or os.urandom
    main = resolve(server)
    second = (main[0], netcheck_port if netcheck_port is not None else main[1] + 1)
    nonces = {main: rng(p.NONCE_SIZE), second: rng(p.NONCE_SIZE)}
    seen: dict[tuple[str, int], p.Endpoint] = {}
    with socket.socket(family(main[0]), socket.SOCK_DGRAM) as sock, signal_wakeup() as wakeup:
        sock.bind(bind or any_address(main))
        local_port = int(sock.getsockname()[1])
        deadline = time.monotonic() + timeout
        next_probe = 0.0
        while len(seen) < 2 and (now := time.monotonic()) < deadline:
            if now >= next_probe:
                for dest, nonce in nonces.items():
                    if dest not in seen:
                        _sendto(sock, p.encode_cookie_request(p.CookieRequest(nonce)), dest)
                next_probe = now + PROBE_INTERVAL
            if not wait_readable(sock, min(next_probe, deadline) - now, wakeup):
                continue
            data, src = sock.recvfrom(2048)
            src = (str(src[0]), int(src[1]))
            reply = p.decode_reply(data)
            if isinstance(reply, p.CookieReply) and nonces.get(src) == reply.nonce:
                seen[src] = reply.observed
    via_main, via_nc = seen.get(main), seen.get(second)
    return NetcheckResult(bool(seen), via_main or via_nc, via_main, via_nc, local_port)


def query(client: RendezvousClient, done: Callable[[Event], bool], timeout: float,
          bind: tuple[str, int] | None = None) -> list[Event]:
    """Drive `client` over a fresh socket until an event satisfies `done`, or `timeout`.

    Issue the requests first with ``now=time.monotonic()`` (e.g. ``client.request_list(now)``).
    Returns every event seen; the last one satisfied `done` unless the timeout came first.
    """
    events: list[Event] = []
    with (socket.socket(family(client.server[0]), socket.SOCK_DGRAM) as sock,
          signal_wakeup() as wakeup):
        sock.bind(bind or any_address(client.server))
        start = time.monotonic()
        deadline = start + timeout
        while True:
            for data, dest in client.datagrams_to_send():
                _sendto(sock, data, dest)
            while (event := client.next_event()) is not None:
                events.append(event)
                if done(event):
                    return events
            now = time.monotonic()
            if now >= deadline:
                return events
            timer = client.get_timer()
            wait = deadline - now if timer is None else min(deadline, timer) - now
            readable = wait_readable(sock, wait, wakeup)
            now = time.monotonic()
            if readable:
                data, src = sock.recvfrom(65536)
                client.receive_datagram(data, (str(src[0]), int(src[1])), now)
            timer = client.get_timer()
            if timer is not None and now >= timer:
                client.handle_timer(now)


@contextlib.contextmanager
def signal_wakeup() -> Iterator[socket.socket | None]:
    """A socket that turns readable when a signal with a Python handler arrives (for
    `wait_readable`); None off the main thread, where no wakeup fd can be set (a node's
    netcheck runs in an executor thread, and the event loop handles the node's signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            yield reader
        finally:
            signal.set_wakeup_fd(previous)


def wait_readable(sock: socket.socket, timeout: float, wakeup: socket.socket | None) -> bool:
    """Whether `sock` turned readable within `timeout` s. A signal ends the wait at once,
    even one that came just before it, and its Python handler runs here (it may raise)."""
    watched = [sock] if wakeup is None else [sock, wakeup]
    readable, _, _ = select.select(watched, [], [], max(0.0, timeout))
    if wakeup is not None and wakeup in readable:
        with contextlib.suppress(BlockingIOError):
            wakeup.recv(64)
        # Changing the mask (here: not at all) makes CPython run the pending handlers before
        # it returns (PyErr_CheckSignals), which compiled code would otherwise put off.
        signal.pthread_sigmask(signal.SIG_BLOCK, ())
    return sock in readable


def _sendto(sock: socket.socket, data: bytes, dest: tuple[str, int]) -> None:
    try:
        sock.sendto(data, dest)
    except OSError as exc:  # unreachable network etc.: the probe simply gets no answer
        log.debug("send to %s failed: %s", format_endpoint(dest), exc)
