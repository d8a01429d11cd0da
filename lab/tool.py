"""Small services and clients for the NAT-lab tests, run inside namespaces as subprocesses.

    python lab/tool.py sha-sink PORT          TCP: read to EOF, answer "<sha256> <bytes>\\n"
    python lab/tool.py upload PORT BYTES      send BYTES pseudo-random bytes, half-close,
                                                   print {"sha256", "reply", "seconds"} as JSON
    python lab/tool.py echo PORT [--udp]      TCP or UDP echo server
    python lab/tool.py fanout PORT CONNS BYTES   CONNS echo exchanges at once; JSON result
    python lab/tool.py udp-ping PORT COUNT    COUNT datagrams to a UDP echo; JSON result
    python lab/tool.py hold PORT [--abort-after S]   TCP server that reports how each
                                                   connection ended ({"ended": "eof"|"reset"}),
                                                   or aborts it (RST) itself after S seconds
    python lab/tool.py abort PORT             connect, send, then abort with RST
    python lab/tool.py wait-end PORT          connect, send, report how the far end ended it

Each server prints "listening" once it accepts connections, so the test can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import struct
import sys
import time

CHUNK = 256 * 1024


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic bytes that do not compress (a test can recompute their hash)."""
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


async def sha_sink(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest, count = hashlib.sha256(), 0
        while data := await reader.read(CHUNK):
            digest.update(data)
            count += len(data)
        writer.write(f"{digest.hexdigest()} {count}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    await server.serve_forever()


async def upload(port: int, size: int) -> None:
    payload = pattern(size)
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    view = memoryview(payload)
    for offset in range(0, size, CHUNK):
        writer.write(view[offset:offset + CHUNK])
        await writer.drain()
    writer.write_eof()  # half-close: the sink's answer must still come back
    reply = (await reader.read(-1)).decode().strip()
    print(json.dumps({"sha256": hashlib.sha256(payload).hexdigest(), "reply": reply,
                      "seconds": time.monotonic() - started}), flush=True)


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def echo(port: int, udp: bool) -> None:
    if udp:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", port))
        print("listening", flush=True)
        await asyncio.Event().wait()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    await server.serve_forever()


async def fanout(port: int, conns: int, size: int) -> None:
    async def one(index: int) -> bool:
        payload = pattern(size, seed=index)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        task = asyncio.create_task(send())
        reply = await reader.read(-1)
        await task
        writer.close()
        return reply == payload

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(conns)))
    print(json.dumps({"intact": sum(results), "conns": conns,
                      "seconds": time.monotonic() - started}), flush=True)


async def udp_ping(port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    received: set[bytes] = set()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.add(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    sent = [i.to_bytes(4, "big") + os.urandom(60) for i in range(count)]
    for index, datagram in enumerate(sent):
        transport.sendto(datagram)
        if index % 10 == 9:
            await asyncio.sleep(0.005)  # ~2,000 datagrams/s: a game's pace, not a flood
    deadline = time.monotonic() + 5
    while len(received) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(json.dumps({"sent": count, "received": len(received & set(sent))}), flush=True)


def rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a crashed or killed program does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def read_to_end(reader: asyncio.StreamReader) -> str:
    try:
        while await reader.read(CHUNK):
            pass
    except ConnectionResetError:
        return "reset"
    return "eof"


async def hold(port: int, abort_after: float | None) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        print(json.dumps({"accepted": True}), flush=True)
        if abort_after is not None:
            await asyncio.sleep(abort_after)
            rst(writer)
            print(json.dumps({"aborted": True}), flush=True)
            return
        ended = await read_to_end(reader)
        print(json.dumps({"ended": ended, "seconds": time.monotonic() - started}), flush=True)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    await server.serve_forever()


async def abort(port: int) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"about to vanish")
    await writer.drain()
    await asyncio.sleep(1.0)
    rst(writer)
    print(json.dumps({"aborted_at": time.monotonic()}), flush=True)


async def wait_end(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello")
    await writer.drain()
    started = time.monotonic()
    ended = await read_to_end(reader)
    print(json.dumps({"ended": ended, "seconds": time.monotonic() - started}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sha-sink")
    p.add_argument("port", type=int)
    p = sub.add_parser("upload")
    p.add_argument("port", type=int)
    p.add_argument("bytes", type=int)
    p = sub.add_parser("echo")
    p.add_argument("port", type=int)
    p.add_argument("--udp", action="store_true")
    p = sub.add_parser("fanout")
    p.add_argument("port", type=int)
    p.add_argument("conns", type=int)
    p.add_argument("bytes", type=int)
    p = sub.add_parser("udp-ping")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("hold")
    p.add_argument("port", type=int)
    p.add_argument("--abort-after", type=float)
    p = sub.add_parser("abort")
    p.add_argument("port", type=int)
    p = sub.add_parser("wait-end")
    p.add_argument("port", type=int)
    args = parser.parse_args()
    jobs = {
        "sha-sink": lambda: sha_sink(args.port),
        "upload": lambda: upload(args.port, args.bytes),
        "echo": lambda: echo(args.port, args.udp),
        "fanout": lambda: fanout(args.port, args.conns, args.bytes),
        "udp-ping": lambda: udp_ping(args.port, args.count),
        "hold": lambda: hold(args.port, args.abort_after),
        "abort": lambda: abort(args.port),
        "wait-end": lambda: wait_end(args.port),
    }
    try:
        asyncio.run(jobs[args.cmd]())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
