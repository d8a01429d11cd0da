"""A tunnel of ptunnel's shape that does nothing but copy: the latency floor of that shape.

`python -m bench.copy_relay connect --listen PORT --udp PORT --peer PORT` accepts TCP
connections and sends what they carry as UDP datagrams to the `expose` end, which writes it to
`--target`'s TCP socket; the answers come back the same way. Two processes, four crossings (TCP to
UDP and back at each end) and six hops per round trip, as in ptunnel, on uvloop as ptunnel is,
with nothing else: no cipher, no streams or acknowledgements, no loss recovery, no congestion
control. Each end prints `{"ready": true}` once its sockets are bound (the connect end: once it
also listens).

Only for latency on loopback, one connection at a time: a datagram is one byte of kind (open,
data, close) and at most `CHUNK` bytes of the connection; a new connection replaces the last, and
nothing is retransmitted (loopback does not drop a ping-pong's datagrams).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Final

import uvloop

OPEN: Final = b"\x00"
DATA: Final = b"\x01"
CLOSE: Final = b"\x02"
CHUNK: Final = 1200  # bytes of a connection a datagram carries: fits any path's MTU
HOST: Final = "127.0.0.1"


class RelayEnd(asyncio.DatagramProtocol):
    """One end: its UDP socket to the other end, and the TCP connection of the moment."""

    def __init__(self, peer: tuple[str, int], target: int | None) -> None:
        self.peer = peer
        self.target = target  # the expose end's TCP service; None at the connect end
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: TcpSide | None = None
        self.pending: list[bytes] = []  # data for a TCP connection still being opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.udp = transport  # type: ignore[assignment]

    def send(self, kind: bytes, data: bytes = b"") -> None:
        assert self.udp is not None
        if not data:
            self.udp.sendto(kind, self.peer)
        for offset in range(0, len(data), CHUNK):
            self.udp.sendto(kind + data[offset:offset + CHUNK], self.peer)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        kind, body = data[:1], data[1:]
        if kind == DATA:
            if self.tcp is not None and self.tcp.transport is not None:
                self.tcp.transport.write(body)
            else:
                self.pending.append(body)
        elif kind == OPEN and self.target is not None:
            self.replace(None)
            asyncio.get_running_loop().create_task(self.open_target())
        elif kind == CLOSE:
            self.replace(None)

    async def open_target(self) -> None:
        assert self.target is not None
        side = TcpSide(self, announce=False)
        self.tcp = side
        await asyncio.get_running_loop().create_connection(lambda: side, HOST, self.target)

    def replace(self, side: TcpSide | None) -> None:
        old, self.tcp = self.tcp, side
        self.pending = []
        if old is not None and old.transport is not None:
            old.transport.close()


class TcpSide(asyncio.Protocol):
    """A TCP connection of one end: what it reads goes to the other end as DATA datagrams."""

    def __init__(self, end: RelayEnd, announce: bool) -> None:
        self.end = end
        self.announce = announce  # the connect end tells the expose end to open its connection
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.announce:
            self.end.replace(self)
            self.end.send(OPEN)
        for body in self.end.pending:
            self.transport.write(body)  # type: ignore[union-attr]
        self.end.pending = []

    def data_received(self, data: bytes) -> None:
        if self.end.tcp is self:
            self.end.send(DATA, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.end.tcp is self:
            self.end.tcp = None
            self.end.send(CLOSE)


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    target = args.target if args.role == "expose" else None
    end = RelayEnd((HOST, args.peer), target)
    await loop.create_datagram_endpoint(lambda: end, local_addr=(HOST, args.udp))
    if args.role == "connect":
        await loop.create_server(lambda: TcpSide(end, announce=True), HOST, args.listen)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.Event().wait()  # until the suite stops the process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_relay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("connect", "expose"))
    parser.add_argument("--udp", type=int, required=True, help="this end's UDP port")
    parser.add_argument("--peer", type=int, required=True, help="the other end's UDP port")
    parser.add_argument("--listen", type=int, help="connect: the TCP port to accept on")
    parser.add_argument("--target", type=int, help="expose: the TCP service to forward to")
    args = parser.parse_args(argv)
    if (args.role == "connect") != (args.listen is not None) or (
            (args.role == "expose") != (args.target is not None)):
        parser.error("connect takes --listen, expose takes --target")
    try:
        uvloop.run(run(args))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
