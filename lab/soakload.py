"""The soak's traffic, run inside the lab's namespaces: echo services and a client that checks
every byte. `lab.soak` starts them; they talk to it through stdout and a JSON-lines file.

    python -m lab.soakload serve BASE COUNT
        TCP echo services on 127.0.0.1:BASE .. BASE+COUNT-1; prints "listening".
    python -m lab.soakload drive BASE COUNT --seconds S --out FILE [--rate R] [--timeout T]
                                 [--held-every H --held-out FILE2]
        every 1/R s per port, a new TCP connection that sends a random payload (random bytes,
        log-uniform size 1 B .. 64 KiB), half-closes and reads the echo to EOF; one JSON line
        per connection in FILE (see `Attempt` in lab/soakreport.py for the fields). With
        --held-every, also one *held session* per port: a connection opened at the start and
        kept open, as an ssh session left open, silent but for a probe every H s (a payload of
        1 B .. 16 KiB echoed on the same connection and checked); one JSON line per probe in
        FILE2 (`HeldProbe` in lab/soakreport.py). A session that failed is replaced by a new
        connection at the next probe.

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
| `closed`       | (held session) a clean EOF while no probe was out | failed connection      |

A held session's probe is judged the same way, with the echo read to the payload's length
instead of to EOF: a clean EOF before all of it came back is `truncated` or `empty`, bytes that
differ are `corrupt`. A clean EOF between probes (`closed`) lost nothing: no byte was out.

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
HELD_PAYLOAD_LOG2 = 14  # a held session's probes: 1 B .. 16 KiB, keystrokes to a screenful
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
def payload_size(rng: random.Random, log2: int = MAX_PAYLOAD_LOG2) -> int:
    return max(1, int(2 ** rng.uniform(0, log2)))


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


async def probe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                payload: bytes) -> tuple[str, bytes, str]:
    """(result, echo received, error text) of one probe of a held session: `payload` written,
    its echo read back to its length on the same connection, without a timeout."""
    try:
        writer.write(payload)
        await writer.drain()
        echo = await reader.readexactly(len(payload))
    except asyncio.IncompleteReadError as exc:  # a clean EOF before the whole echo
        return classify(payload, exc.partial), exc.partial, "EOF before the whole echo"
    except OSError as exc:
        return "reset", b"", f"{type(exc).__name__}: {exc}"
    return classify(payload, echo), echo, ""


async def idle_until(reader: asyncio.StreamReader, at: float,
                     stop: asyncio.Event) -> tuple[str, str] | None:
    """Wait until the monotonic time `at` (or `stop`) on a held session with no probe out: None
    if nothing came, else how the connection ended meanwhile (a clean EOF, an error, or bytes
    nobody asked for)."""
    read = asyncio.ensure_future(reader.read(1))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({read, stopped}, timeout=max(0.0, at - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (read, stopped):
            if not task.done():
                task.cancel()
    if read not in done:
        return None
    try:
        data = read.result()
    except OSError as exc:
        return "reset", f"while idle: {type(exc).__name__}: {exc}"
    if data:
        return "corrupt", "a byte arrived while no probe was out"
    return "closed", "a clean EOF while no probe was out"


def write_line(out: IO[str], entry: dict[str, Any]) -> None:
    out.write(json.dumps(entry, separators=(",", ":")) + "\n")
    out.flush()


class Driver:
    def __init__(self, base: int, count: int, seconds: float, rate: float, timeout: float,
                 out: IO[str], seed: int, held_every: float = 0.0,
                 held_out: IO[str] | None = None) -> None:
        self.base, self.count, self.seconds = base, count, seconds
        self.interval, self.timeout, self.out = 1.0 / rate, timeout, out
        self.held_every, self.held_out = held_every, held_out
        self.rng = random.Random(seed)
        self.open: dict[asyncio.Task[None], dict[str, Any]] = {}
        self.held_open: dict[int, dict[str, Any]] = {}  # tunnel -> its probe under way
        self.stop = asyncio.Event()

    def record(self, entry: dict[str, Any]) -> None:
        write_line(self.out, entry)

    def record_held(self, entry: dict[str, Any]) -> None:
        assert self.held_out is not None
        write_line(self.held_out, entry)

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

    async def stopped_at(self, at: float) -> bool:
        """Sleep until the monotonic time `at`; True if the run was stopped first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, at - time.monotonic()))
            return True
        return False

    async def launcher(self, tunnel: int, started: float) -> None:
        # Tunnels are staggered over one interval so the load is spread evenly.
        first = started + self.interval * tunnel / self.count
        serial = 0
        while (at := first + serial * self.interval) - started < self.seconds:
            if await self.stopped_at(at):
                return
            # Each connection is its own task: one that hangs does not delay the next.
            asyncio.get_running_loop().create_task(self.one(tunnel, serial))
            serial += 1

    async def held(self, tunnel: int, started: float) -> None:
        """Tunnel `tunnel`'s held session: opened at the start, probed every `held_every` s (the
        tunnels staggered half an interval from the new connections). One that failed is
        replaced at once, as a user starts ssh again; one that could not be opened is tried
        again at the next probe's time."""
        first = started + self.held_every * (tunnel + 0.5) / self.count
        session, serial, opened = 0, 0, 0.0
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while (at := first + serial * self.held_every) - started < self.seconds:
                failure: tuple[str, str] | None = None
                if conn is None:
                    session, opened = session + 1, time.monotonic()
                    conn, failure = await self.open_held(tunnel)
                    if failure is not None and serial and await self.stopped_at(at):
                        return
                if conn is not None:
                    failure = await idle_until(conn[0], at, self.stop)
                    if self.stop.is_set():
                        return
                entry: dict[str, Any] = {"tunnel": tunnel, "serial": serial, "session": session,
                                         "opened": opened}
                if failure is None:
                    assert conn is not None
                    failure = await self.probe_held(conn, entry)
                else:
                    now = time.monotonic()
                    entry.update(start=now, end=now, bytes=0, result=failure[0], echoed=0)
                if failure is not None:
                    if failure[1]:
                        entry["error"] = failure[1][:200]
                    if conn is not None:
                        conn[1].close()
                    conn = None
                self.record_held(entry)
                serial += 1
        finally:
            if conn is not None:
                conn[1].close()

    async def open_held(self, tunnel: int) -> tuple[
            tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, tuple[str, str] | None]:
        try:
            conn = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.base + tunnel), self.timeout)
        except ConnectionRefusedError:
            return None, ("refused", "")
        except (OSError, TimeoutError) as exc:
            return None, ("reset", f"connect: {type(exc).__name__}: {exc}")
        return conn, None

    async def probe_held(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                         entry: dict[str, Any]) -> tuple[str, str] | None:
        """One probe of a held session, recorded into `entry`; None if it was answered."""
        payload = os.urandom(payload_size(self.rng, HELD_PAYLOAD_LOG2))
        entry.update(start=time.monotonic(), bytes=len(payload))
        self.held_open[entry["tunnel"]] = entry
        try:
            result, echo, error = await asyncio.wait_for(probe(*conn, payload), self.timeout)
        except TimeoutError:
            result, echo, error = "timeout", b"", f"no echo within {self.timeout:.0f} s"
        del self.held_open[entry["tunnel"]]
        entry.update(end=time.monotonic(), result=result, echoed=len(echo))
        return None if result == "ok" else (result, error)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        started = time.monotonic()
        held = [loop.create_task(self.held(t, started))
                for t in range(self.count)] if self.held_every else []
        await asyncio.gather(*(self.launcher(t, started) for t in range(self.count)))
        deadline = time.monotonic() + END_GRACE
        while (self.open or not all(task.done() for task in held)) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        now = time.monotonic()
        for task, entry in list(self.open.items()):
            task.cancel()
            entry.update(end=now, result="unfinished", echoed=0)
            self.record(entry)
        for task in held:
            task.cancel()
        for entry in list(self.held_open.values()):
            entry.update(end=now, result="unfinished", echoed=0)
            self.record_held(entry)


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
    p.add_argument("--held-every", type=float, default=0.0,
                   help="seconds between the probes of each port's held session (0: none)")
    p.add_argument("--held-out", help="the held sessions' JSON lines (with --held-every)")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.base, args.count))
        return 0
    if not math.isfinite(args.seconds) or args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.held_every and not args.held_out:
        parser.error("--held-every needs --held-out FILE")
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(args.out, "a", encoding="utf-8"))
        held_out = files.enter_context(open(args.held_out, "a", encoding="utf-8")) \
            if args.held_every else None
        driver = Driver(args.base, args.count, args.seconds, args.rate, args.timeout, out,
                        args.seed, args.held_every, held_out)
        asyncio.run(driver.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
