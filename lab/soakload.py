"""The soak's traffic, run inside the lab's namespaces: echo services and a client that checks
every byte. `lab.soak` starts them; they talk to it through stdout and a JSON-lines file.

    python -m lab.soakload serve BASE COUNT
        TCP echo services on 127.0.0.1:BASE .. BASE+COUNT-1; prints "listening".
    python -m lab.soakload drive BASE COUNT --seconds S --out FILE [--rate R] [--timeout T]
        every 1/R s per port, a new TCP connection that sends a random payload (random bytes,
        log-uniform size 1 B .. 64 KiB), half-closes and reads the echo to EOF; one JSON line
        per connection in FILE (see `Attempt` in lab/soakreport.py for the fields).

How a connection ends, as the client sees it (`result`):

| result         | what happened                                   | counts as              |
|----------------|-------------------------------------------------|------------------------|
| `ok`           | clean EOF, SHA-256 of the echo == of the payload | success                |
| `corrupt`      | clean EOF, the echo differs from the payload     | INTEGRITY failure      |
| `truncated`    | clean EOF after a strict, non-empty prefix       | INTEGRITY failure      |
| `empty`        | clean EOF before any byte came back              | INTEGRITY failure      |
| `refused`      | the local port refused (no listener)             | failed connection      |
| `reset`        | RST or another socket error                      | failed connection      |
| `timeout`      | no EOF within --timeout                          | failed connection      |
| `unfinished`   | still running when the run ended                 | neither (not counted)  |

A clean EOF is the tunnel telling the application "that was everything": a short, empty or
different echo behind it is data the tunnel took (the local socket accepted the payload), then
lost or changed while reporting success. The echo service never closes first, so an empty echo
is no exception: an application cannot tell it from a service that had nothing to say. A
connection that ended with an error (RST, refused, timeout) told the application it failed, so
nothing it reported was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import signal
import sys
import time
from typing import IO, Any

CHUNK = 64 * 1024
MAX_PAYLOAD_LOG2 = 16  # payloads of 1 B .. 64 KiB, log-uniform: many small, some large
END_GRACE = 5.0  # s; connections still open this long after the last launch are `unfinished`


# --- the exposed services ---------------------------------------------------------------------
async def echo_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except OSError:
        pass  # the tunnel aborted this connection: the client sees it, nothing to tell here
    finally:
        writer.close()


async def serve(base: int, count: int) -> None:
    servers = [await asyncio.start_server(echo_client, "127.0.0.1", base + i)
               for i in range(count)]
    print("listening", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


# --- the client -------------------------------------------------------------------------------
def payload_size(rng: random.Random) -> int:
    return max(1, int(2 ** rng.uniform(0, MAX_PAYLOAD_LOG2)))


def classify(payload: bytes, echo: bytes) -> str:
    """The result of a connection that ended with a clean EOF after `echo` came back."""
    if hashlib.sha256(echo).digest() == hashlib.sha256(payload).digest():
        return "ok"
    if not echo:
        return "empty"
    return "truncated" if payload.startswith(echo) else "corrupt"


async def exchange(port: int, payload: bytes) -> tuple[str, bytes, str]:
    """(result, echo received, error text) of one connection, without a timeout."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return "refused", b"", ""
    except OSError as exc:
        return "reset", b"", f"connect: {exc}"
    echo = bytearray()

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(CHUNK):
            echo += data
        await sender
    except OSError as exc:
        return "reset", bytes(echo), f"{type(exc).__name__}: {exc}"
    finally:
        if not sender.done():
            sender.cancel()
        elif not sender.cancelled():
            sender.exception()  # retrieved: the reader's error already tells this connection's end
        writer.close()
    return classify(payload, bytes(echo)), bytes(echo), ""


class Driver:
    def __init__(self, base: int, count: int, seconds: float, rate: float, timeout: float,
                 out: IO[str], seed: int) -> None:
        self.base, self.count, self.seconds = base, count, seconds
        self.interval, self.timeout, self.out = 1.0 / rate, timeout, out
        self.rng = random.Random(seed)
        self.open: dict[asyncio.Task[None], dict[str, Any]] = {}
        self.stop = asyncio.Event()

    def record(self, entry: dict[str, Any]) -> None:
        self.out.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.out.flush()

    async def one(self, tunnel: int, serial: int) -> None:
        payload = os.urandom(payload_size(self.rng))
        entry: dict[str, Any] = {"tunnel": tunnel, "serial": serial, "start": time.monotonic(),
                                 "bytes": len(payload)}
        task = asyncio.current_task()
        assert task is not None
        self.open[task] = entry
        try:
            result, echo, error = await asyncio.wait_for(
                exchange(self.base + tunnel, payload), self.timeout)
        except TimeoutError:
            result, echo, error = "timeout", b"", f"no EOF within {self.timeout:.0f} s"
        del self.open[task]
        entry.update(end=time.monotonic(), result=result, echoed=len(echo))
        if error:
            entry["error"] = error[:200]
        if result in ("corrupt", "truncated"):
            entry["sha256_sent"] = hashlib.sha256(payload).hexdigest()
            entry["sha256_echo"] = hashlib.sha256(echo).hexdigest()
        self.record(entry)

    async def launcher(self, tunnel: int, started: float) -> None:
        # Tunnels are staggered over one interval so the load is spread evenly.
        first = started + self.interval * tunnel / self.count
        serial = 0
        while not self.stop.is_set():
            at = first + serial * self.interval
            if at - started >= self.seconds:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, at - time.monotonic()))
                return
            # Each connection is its own task: one that hangs does not delay the next.
            asyncio.get_running_loop().create_task(self.one(tunnel, serial))
            serial += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        started = time.monotonic()
        await asyncio.gather(*(self.launcher(t, started) for t in range(self.count)))
        deadline = time.monotonic() + END_GRACE
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        now = time.monotonic()
        for task, entry in list(self.open.items()):
            task.cancel()
            entry.update(end=now, result="unfinished", echoed=0)
            self.record(entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.soakload")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("base", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("drive")
    p.add_argument("base", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float, default=1.0, help="connections per second per port")
    p.add_argument("--timeout", type=float, default=35.0)
    p.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.base, args.count))
        return 0
    if not math.isfinite(args.seconds) or args.seconds <= 0:
        parser.error("--seconds must be positive")
    with open(args.out, "a", encoding="utf-8") as out:
        driver = Driver(args.base, args.count, args.seconds, args.rate, args.timeout, out,
                        args.seed)
        asyncio.run(driver.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
