"""A fleet of simulated nodes for the rendezvous load test: sans-IO `RendezvousClient`s in one
process, each on its own UDP socket and its own loopback address (127.x.y.z), so the server's
per-source-IP limit and its cookies see N distinct nodes.

The shell is as thin as the node's: datagrams in, datagrams out, one heap of client deadlines
served by a periodic tick (`TICK`). Three operations are timed, each from its start to the
answer that ends it, whatever happened in between (cookie fetches, retransmissions, a move to
another server):

| op         | starts                                          | ends                          |
|------------|-------------------------------------------------|-------------------------------|
| `register` | `register()` (the client's `start()`)           | `Registered`                  |
| `refresh`  | the client's own refresh timer sends a REGISTER | its REGISTERED (no REGISTER   |
|            |                                                 | left waiting)                 |
| `connect`  | `connect()` (`request_connect`)                 | our `Introduced`              |

For each op it also counts the request's transmissions (datagrams of the op's type sent while
it waited): an op sent more than once was retried, i.e. a datagram or its answer was lost (a
full socket buffer) or the answer came later than the client's retransmission timer (1 s).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rendezvous import protocol as p
from tunnel.path import rendezvous as rc

TICK = 0.005  # seconds between timer sweeps: retransmissions are seconds apart, so this is fine
Endpoint = tuple[str, int]
OPS = ("register", "refresh", "connect")
_OP_OF_TYPE = {p.REGISTER: ("register", "refresh"), p.CONNECT: ("connect",)}


def node_address(i: int) -> str:
    """127.A.B.C for node i: one loopback address each, skipping 127.0.0.0/16 (the servers')."""
    n = i + 65_536
    return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


@dataclass
class SimNode:
    index: int
    client: rc.RendezvousClient
    transport: asyncio.DatagramTransport | None = None
    asked: dict[str, float] = field(default_factory=dict)  # op -> when (loop time)
    sent: Counter[str] = field(default_factory=Counter)  # op -> transmissions so far


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, fleet: Fleet, node: SimNode) -> None:
        self.fleet, self.node = fleet, node

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.fleet.on_datagram(self.node, data, (addr[0], addr[1]))


class Fleet:
    def __init__(self, servers_of: Callable[[int], list[Endpoint]],
                 secret_of: Callable[[int], bytes], names_of: Callable[[int], tuple[str, ...]],
                 server_key: bytes, refresh_interval: float) -> None:
        self._servers_of, self._secret_of, self._names_of = servers_of, secret_of, names_of
        self._key = server_key
        self._refresh_interval = refresh_interval
        self.nodes: list[SimNode] = []
        self._heap: list[tuple[float, int]] = []
        self.latencies: dict[str, list[float]] = {op: [] for op in OPS}
        self.done: dict[str, list[float]] = {op: [] for op in OPS}  # completion times
        self.retried: Counter[str] = Counter()  # answered ops sent more than once
        self.transmissions: Counter[str] = Counter()  # of answered ops
        self.cookie_requests = 0
        self.refused: Counter[str] = Counter()
        self.moves = 0  # ServerChanged: a node gave up on its server for the next one
        self._loop = asyncio.get_running_loop()
        self._ticker: asyncio.Task[None] | None = None

    async def add(self, count: int) -> None:
        for i in range(len(self.nodes), len(self.nodes) + count):
            servers = self._servers_of(i)
            client = rc.RendezvousClient(self._secret_of(i), os.urandom(32), self._names_of(i),
                                         [], servers[0], server_key=self._key,
                                         counter_start=int(time.time() * 1e6),
                                         fallbacks=servers[1:],
                                         refresh_interval=self._refresh_interval)
            node = SimNode(i, client)
            transport, _ = await self._loop.create_datagram_endpoint(
                functools.partial(_Socket, self, node), local_addr=(node_address(i), 0))
            node.transport = transport
            self.nodes.append(node)
        if self._ticker is None:
            self._ticker = self._loop.create_task(self._tick())

    def reset(self) -> None:
        """Start a new phase's figures (ops in flight keep their start times)."""
        for figures in (self.latencies, self.done):
            for values in figures.values():
                values.clear()
        self.retried.clear()
        self.transmissions.clear()
        self.refused.clear()
        self.cookie_requests = self.moves = 0

    def register(self, node: SimNode) -> None:
        now = self._loop.time()
        self._ask(node, "register", now)
        node.asked.pop("refresh", None)  # start() takes over a refresh in flight
        node.client.start(now)
        self._flush(node, now)

    def connect(self, node: SimNode, name: str) -> None:
        now = self._loop.time()
        self._ask(node, "connect", now)
        node.client.request_connect(name, now)
        self._flush(node, now)

    def _ask(self, node: SimNode, op: str, now: float) -> None:
        node.asked[op] = now
        node.sent[op] = 0

    def on_datagram(self, node: SimNode, data: bytes, addr: Endpoint) -> None:
        now = self._loop.time()
        node.client.receive_datagram(data, addr, now)
        self._flush(node, now)
        if "refresh" in node.asked and not node.client.awaiting_registration:
            self._answered(node, "refresh", now)

    def _flush(self, node: SimNode, now: float) -> None:
        client = node.client
        assert node.transport is not None
        for data, dest in client.datagrams_to_send():
            node.transport.sendto(data, dest)
            if data[0] == p.COOKIE_REQUEST:
                self.cookie_requests += 1
            for op in _OP_OF_TYPE.get(data[0], ()):
                if op in node.asked:
                    node.sent[op] += 1
                    break
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
        elif isinstance(event, rc.ServerChanged):
            self.moves += 1
        elif isinstance(event, rc.RegistrationRefused | rc.ConnectRefused):
            self.refused[type(event).__name__] += 1
            node.asked.pop("register" if isinstance(event, rc.RegistrationRefused)
                           else "connect", None)

    def _answered(self, node: SimNode, op: str, now: float) -> None:
        asked = node.asked.pop(op, None)
        if asked is not None:
            self.latencies[op].append(now - asked)
            self.done[op].append(now)
            sent = node.sent.pop(op, 0)
            self.transmissions[op] += sent
            if sent > 1:
                self.retried[op] += 1

    async def _tick(self) -> None:
        while True:
            now = self._loop.time()
            while self._heap and self._heap[0][0] <= now:
                deadline, i = heapq.heappop(self._heap)
                node = self.nodes[i]
                client = node.client
                if client.get_timer() != deadline:
                    continue  # a stale entry: the client's deadline moved since
                waiting = client.awaiting_registration
                client.handle_timer(now)
                if not waiting and client.awaiting_registration and "register" not in node.asked:
                    self._ask(node, "refresh", now)  # the client's own refresh timer fired
                self._flush(node, now)
            await asyncio.sleep(TICK)

    def pending(self, op: str) -> int:
        return sum(1 for n in self.nodes if op in n.asked)

    def registered(self) -> int:
        return sum(1 for n in self.nodes if n.client.registered)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for node in self.nodes:
            if node.transport is not None:
                node.transport.close()
