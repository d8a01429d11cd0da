"""Rendezvous clients and servers (`Registry`) in one process, on virtual time, no sockets: each
datagram reaches the server it is addressed to, if that server is up, and the server's replies
reach their clients, each `LATENCY` later.

The base of the single-server harness (tests/path/test_rendezvous_client.py) and of the
two-server deployment (tests/path/test_rendezvous_failover.py): they add how their clients are
made, and what they record of the traffic through `_sent` and `_lost`.
"""

from __future__ import annotations

from typing import TypeVar

from rendezvous import protocol as p
from rendezvous.registry import Registry
from tunnel.path import rendezvous as rc

E = TypeVar("E")


class VirtualRendezvous:
    LATENCY = 0.010

    def __init__(self, servers: dict[p.Endpoint, Registry], now: float) -> None:
        self.servers = servers
        self.up = dict.fromkeys(servers, True)
        # Extra seconds before a server's answers leave (a server working through a backlog).
        self.answer_delay = dict.fromkeys(servers, 0.0)
        self.clients: dict[p.Endpoint, rc.RendezvousClient] = {}
        self.events: dict[p.Endpoint, list[rc.Event]] = {}
        self.wire: list[bytes] = []  # every datagram, both ways: what an on-path observer sees
        self.now = now
        # (delivered at, source, destination, datagram, toward a server)
        self._inflight: list[tuple[float, p.Endpoint, p.Endpoint, bytes, bool]] = []

    def attach(self, addr: p.Endpoint, client: rc.RendezvousClient) -> rc.RendezvousClient:
        """`client` behind the public endpoint `addr` (replacing any client there)."""
        self.clients[addr] = client
        self.events.setdefault(addr, [])
        return client

    def start(self, *clients: rc.RendezvousClient, seconds: float = 1.0) -> None:
        """Start `clients` at this moment, then run `seconds` of virtual time."""
        for client in clients:
            client.start(self.now)
        self.run(seconds)

    def _sent(self, src: p.Endpoint, dest: p.Endpoint, data: bytes) -> None:
        """A client sent `data` (before any loss): for subclasses that count the traffic."""

    def _lost(self) -> bool:
        """Whether the datagram on its way now is lost (a client's or a server's reply)."""
        return False

    def _collect(self) -> None:
        for addr, c in self.clients.items():
            for data, dest in c.datagrams_to_send():
                self._sent(addr, dest, data)
                if not self._lost():
                    self._inflight.append((self.now + self.LATENCY, addr, dest, data, True))
            while (ev := c.next_event()) is not None:
                self.events[addr].append(ev)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            self._collect()
            deadlines = [m[0] for m in self._inflight]
            deadlines += [t for c in self.clients.values() if (t := c.get_timer()) is not None]
            deadlines += [max(r.get_timer(), self.now) for s, r in self.servers.items()
                          if self.up[s]]
            nxt = min(deadlines)
            if nxt > end:
                self.now = end
                return
            self.now = nxt
            due = [m for m in self._inflight if m[0] <= self.now]
            self._inflight = [m for m in self._inflight if m[0] > self.now]
            for _, src, dest, data, upward in due:
                self.wire.append(data)
                if upward and self.up[dest]:
                    late = self.now + self.LATENCY + self.answer_delay[dest]
                    for send in self.servers[dest].handle(data, src, self.now):
                        if not self._lost():
                            self._inflight.append((late, dest, send.addr, send.data, False))
                elif not upward and dest in self.clients:
                    self.clients[dest].receive_datagram(data, src, self.now)
            for s, reg in self.servers.items():
                if self.up[s]:
                    for send in reg.handle_timer(self.now):
                        self._inflight.append((self.now + self.LATENCY, s, send.addr, send.data,
                                               False))
            for c in self.clients.values():
                t = c.get_timer()
                if t is not None and t <= self.now:
                    c.handle_timer(self.now)

    def take(self, addr: p.Endpoint, kind: type[E]) -> list[E]:
        """The events of `kind` the client at `addr` has had since the last take of that kind."""
        got: list[E] = [e for e in self.events[addr] if isinstance(e, kind)]
        self.events[addr] = [e for e in self.events[addr] if not isinstance(e, kind)]
        return got
