"""CPU per 64-byte ping-pong round trip of the whole tunnel, in one process.

`python -m bench.pingpong_cpu` runs a rendezvous, an exposing and a connecting node (the public
API, `tunnel.api.Tunnel`), a TCP echo service and a client in one uvloop event loop on
127.0.0.1, and times `--round-trips` 64-byte round trips through the tunnel. Each round trip
crosses both nodes twice, as in `make bench`'s latency row, but with no other process and no
scheduler in the way: the CPU per round trip (`process_time`, of everything in the process) is
what the glue of a lone small message costs, steady from run to run on a busy machine where the
separate-process latency is not (issue 13: flush machinery, timers, per-message allocations).

It is a lower bound, not the latency: with each node in its own process every crossing also
pays a wake-up, and on a virtual machine caches and branch predictors go cold between them, so
the same work costs several times as much there. `PTUNNEL_PURE=1` measures the pure-Python
build; the first output line says which build ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import uvloop

import tunnel
from bench.paths.base import free_port, free_rendezvous_port
from rendezvous.server import serve
from tunnel.api import Tunnel
from tunnel.keys.identity import Identity

MESSAGE = bytes(range(64))
WARMUP = 300  # round trips before timing: the path is chosen, the windows have opened


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class Client(asyncio.Protocol):
    """Sends a message and resolves `answered` when all of it came back."""

    def __init__(self) -> None:
        self.got = 0
        self.answered: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= len(MESSAGE) and self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    async def round_trip(self) -> None:
        self.got = 0
        self.answered = asyncio.get_running_loop().create_future()
        self.transport.write(MESSAGE)  # type: ignore[attr-defined]
        await self.answered


async def measure(round_trips: int, home: Path) -> tuple[float, list[float]]:
    """CPU seconds of `round_trips` round trips and the wall time of each."""
    loop = asyncio.get_running_loop()
    port = free_rendezvous_port()
    ready = asyncio.Event()
    server = loop.create_task(serve(("127.0.0.1", port), home / "rendezvous.db", ready=ready.set))
    await asyncio.wait_for(ready.wait(), 5)
    echo = await loop.create_server(Echo, "127.0.0.1", 0)
    secret = os.urandom(32)
    tunnels = []
    for name in ("exposer", "connector"):
        (home / name).mkdir(mode=0o700)
        tunnels.append(Tunnel(home=home / name, identity=Identity.generate(),
                              network_secret=secret, rendezvous=("127.0.0.1", port),
                              bind=("127.0.0.1", 0)))
    exposer, connector = tunnels
    try:
        await exposer.expose(int(echo.sockets[0].getsockname()[1]), "echo")
        local = free_port()
        await connector.connect("echo", local)
        _, client = await loop.create_connection(Client, "127.0.0.1", local)
        for _ in range(WARMUP):
            await client.round_trip()
        walls: list[float] = []
        cpu = time.process_time()
        for _ in range(round_trips):
            start = time.perf_counter()
            await client.round_trip()
            walls.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        client.transport.close()
    finally:
        for one in tunnels:
            await one.close()
        echo.close()
        server.cancel()
    return cpu, walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=5000)
    args = parser.parse_args()
    print(f"build: {tunnel.BUILD}")
    with tempfile.TemporaryDirectory(prefix="ptunnel-pingpong-") as tmp:
        cpu, walls = uvloop.run(measure(args.round_trips, Path(tmp)))
    walls.sort()
    print(f"{args.round_trips} round trips of {len(MESSAGE)} bytes: "
          f"CPU {cpu / args.round_trips * 1e6:.1f} us per round trip (everything in the process), "
          f"wall p50 {walls[len(walls) // 2] * 1e6:.0f} us")


if __name__ == "__main__":
    main()
