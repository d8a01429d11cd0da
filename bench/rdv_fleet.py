"""A fleet of simulated nodes for the rendezvous load test: sans-IO `RendezvousClient`s in one
process, each on its own UDP socket and its own loopback address (127.x.y.z), so the server's
per-source-IP limit and its cookies see N distinct nodes.

The shell is as thin as the node's: datagrams in, datagrams out, one heap of client deadlines
served by a periodic tick (`TICK`). Every request the load test makes is timed from the call to
the event that answers it (`Registered` for `register`, our own `Introduced` for `connect`).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.path import rendezvous as rc

TICK = 0.005  # seconds between timer sweeps: retransmissions are seconds apart, so this is fine
Endpoint = tuple[str, int]


def node_address(i: int) -> str:
    """127.A.B.C for node i: one loopback address each, skipping 127.0.0.0/16 (the servers')."""
    n = i + 65_536
    return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


@dataclass
class SimNode:
    index: int
    client: rc.RendezvousClient
    transport: asyncio.DatagramTransport | None = None
    asked: dict[str, float] = field(default_factory=dict)  # what -> when (loop time)


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, fleet: Fleet, node: SimNode) -> None:
        self.fleet, self.node = fleet, node

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.fleet.on_datagram(self.node, data, (addr[0], addr[1]))


class Fleet:
    def __init__(self, servers_of: Callable[[int], list[Endpoint]],
                 secret_of: Callable[[int], bytes], names_of: Callable[[int], tuple[str, ...]],
                 server_key: bytes) -> None:
        self._servers_of, self._secret_of, self._names_of = servers_of, secret_of, names_of
        self._key = server_key
        self.nodes: list[SimNode] = []
        self._heap: list[tuple[float, int]] = []
        self.latencies: dict[str, list[float]] = {"register": [], "connect": []}
        self.done: dict[str, list[float]] = {"register": [], "connect": []}  # completion times
        self.refused: dict[str, int] = {}
        self._loop = asyncio.get_running_loop()
        self._ticker: asyncio.Task[None] | None = None

    async def add(self, count: int) -> None:
        for i in range(len(self.nodes), len(self.nodes) + count):
            servers = self._servers_of(i)
            client = rc.RendezvousClient(self._secret_of(i), os.urandom(32), self._names_of(i),
                                         [], servers[0], server_key=self._key,
                                         counter_start=int(time.time() * 1e6),
                                         fallbacks=servers[1:])
            node = SimNode(i, client)
            transport, _ = await self._loop.create_datagram_endpoint(
                functools.partial(_Socket, self, node), local_addr=(node_address(i), 0))
            node.transport = transport
            self.nodes.append(node)
        if self._ticker is None:
            self._ticker = self._loop.create_task(self._tick())

    def register(self, node: SimNode) -> None:
        now = self._loop.time()
        node.asked["register"] = now
        node.client.start(now)
        self._flush(node, now)

    def connect(self, node: SimNode, name: str) -> None:
        now = self._loop.time()
        node.asked["connect"] = now
        node.client.request_connect(name, now)
        self._flush(node, now)

    def on_datagram(self, node: SimNode, data: bytes, addr: Endpoint) -> None:
        now = self._loop.time()
        node.client.receive_datagram(data, addr, now)
        self._flush(node, now)

    def _flush(self, node: SimNode, now: float) -> None:
        client = node.client
        assert node.transport is not None
        for data, dest in client.datagrams_to_send():
            node.transport.sendto(data, dest)
        while (event := client.next_event()) is not None:
            self._on_event(node, event, now)
        deadline = client.get_timer()
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, node.index))

    def _on_event(self, node: SimNode, event: rc.Event, now: float) -> None:
        if isinstance(event, rc.Registered):
            self._answered(node, "register", now)
        elif isinstance(event, rc.Introduced) and event.initiated_by_us:
            self._answered(node, "connect", now)
        elif isinstance(event, rc.RegistrationRefused | rc.ConnectRefused):
            kind = type(event).__name__
            self.refused[kind] = self.refused.get(kind, 0) + 1
            node.asked.pop("register" if isinstance(event, rc.RegistrationRefused)
                           else "connect", None)

    def _answered(self, node: SimNode, what: str, now: float) -> None:
        asked = node.asked.pop(what, None)
        if asked is not None:
            self.latencies[what].append(now - asked)
            self.done[what].append(now)

    async def _tick(self) -> None:
        while True:
            now = self._loop.time()
            while self._heap and self._heap[0][0] <= now:
                deadline, i = heapq.heappop(self._heap)
                node = self.nodes[i]
                if node.client.get_timer() != deadline:
                    continue  # a stale entry: the client's deadline moved since
                node.client.handle_timer(now)
                self._flush(node, now)
            await asyncio.sleep(TICK)

    def pending(self, what: str) -> int:
        return sum(1 for n in self.nodes if what in n.asked)

    def registered(self) -> int:
        return sum(1 for n in self.nodes if n.client.registered)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for node in self.nodes:
            if node.transport is not None:
                node.transport.close()
