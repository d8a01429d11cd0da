"""A minimal TCP-over-QUIC forwarder on aioquic, the pure-Python QUIC peer of the benchmark.

    python -m bench.quicfwd server --target 127.0.0.1:SINK --cert C --key K   prints {"port": N}
    python -m bench.quicfwd client --server 127.0.0.1:N --ca C                prints {"port": M}

The client listens on TCP and carries each accepted connection on its own bidirectional QUIC
stream (one QUIC connection for all); the server connects each stream to the target. Datagrams are
aioquic's default 1200 bytes. It runs on asyncio's own loop, not uvloop: uvloop's 1 ms clock
starves aioquic's pacing and recovery (see /work/shared/PERF.md). aioquic queues stream data
without limit, so the TCP reader waits while more than `HIGH_WATER` bytes of a stream are unacked:
that is the backpressure a real forwarder needs, otherwise a bulk sender fills memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import ssl
import sys
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamAdapter
from aioquic.asyncio.server import serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

log = logging.getLogger(__name__)

ALPN = "ptunnel-bench"
SERVER_NAME = "localhost"  # the throwaway certificate's name
HIGH_WATER = 256 << 10  # bytes unacked on a stream before we stop reading its TCP side
READ_SIZE = 64 << 10
MAX_STREAMS = 4096  # aioquic grants 128 concurrent streams; the idle-streams test opens 1,000
IDLE_TIMEOUT_S = 600.0  # idle streams are held open for a while; do not let QUIC time them out


class ForwardProtocol(QuicConnectionProtocol):
    """aioquic's protocol plus an event set whenever acknowledgements may have freed buffer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = asyncio.Event()
        # Private in aioquic: raise the concurrent-stream limit we advertise (see MAX_STREAMS).
        self._quic._local_max_streams_bidi.value = MAX_STREAMS

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        self.progress.set()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        super().quic_event_received(event)
        if isinstance(event, events.ConnectionTerminated):
            self.progress.set()

    def unacked(self, stream_id: int) -> int:
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)


async def tcp_to_quic(proto: ForwardProtocol, stream_id: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        while proto.unacked(stream_id) > HIGH_WATER and not proto._closed.is_set():
            proto.progress.clear()
            await proto.progress.wait()
    if writer.can_write_eof():
        writer.write_eof()


async def quic_to_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def splice(proto: ForwardProtocol, stream_id: int,
                 tcp: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 quic: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    sock = tcp[1].get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(tcp_to_quic(proto, stream_id, tcp[0], quic[1]),
                             quic_to_tcp(quic[0], tcp[1]))
    except (ConnectionError, OSError) as exc:
        log.debug("stream %d ended: %s", stream_id, exc)
    finally:
        tcp[1].close()


def config(is_client: bool) -> QuicConfiguration:
    return QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                             idle_timeout=IDLE_TIMEOUT_S, server_name=SERVER_NAME)


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def run_server(args: argparse.Namespace) -> None:
    target = host_port(args.target)
    configuration = config(is_client=False)
    configuration.load_cert_chain(args.cert, args.key)
    tasks: set[asyncio.Task[None]] = set()
    protocols: list[ForwardProtocol] = []

    def make_protocol(*a: Any, **kw: Any) -> ForwardProtocol:
        proto = ForwardProtocol(*a, **kw)
        protocols.append(proto)
        return proto

    async def on_stream(qreader: asyncio.StreamReader, qwriter: asyncio.StreamWriter) -> None:
        adapter = qwriter.transport
        assert isinstance(adapter, QuicStreamAdapter)
        proto, stream_id = adapter.protocol, adapter.stream_id
        assert isinstance(proto, ForwardProtocol)
        try:
            tcp = await asyncio.open_connection(*target)
        except OSError as exc:
            log.warning("cannot reach target: %s", exc)
            qwriter.close()
            return
        await splice(proto, stream_id, tcp, (qreader, qwriter))

    def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(on_stream(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await serve(args.host, args.port, configuration=configuration,
                         create_protocol=make_protocol, stream_handler=stream_handler)
    assert server._transport is not None
    port = server._transport.get_extra_info("sockname")[1]
    print(json.dumps({"port": port}), flush=True)
    await asyncio.Event().wait()


async def run_client(args: argparse.Namespace) -> None:
    server_host, server_port = host_port(args.server)
    configuration = config(is_client=True)
    configuration.load_verify_locations(args.ca)
    configuration.verify_mode = ssl.CERT_REQUIRED
    tasks: set[asyncio.Task[None]] = set()
    async with connect(server_host, server_port, configuration=configuration,
                       create_protocol=ForwardProtocol) as proto:
        assert isinstance(proto, ForwardProtocol)

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            qreader, qwriter = await proto.create_stream()
            adapter = qwriter.transport
            assert isinstance(adapter, QuicStreamAdapter)
            stream_id = adapter.stream_id
            # aioquic hands out the next stream id without reserving it until data is sent: two
            # connections accepted back to back would share one stream. An empty write reserves.
            proto._quic.send_stream_data(stream_id, b"")
            await splice(proto, stream_id, (reader, writer), (qreader, qwriter))

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(on_tcp(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        listener = await asyncio.start_server(accept, args.host, args.port, backlog=2048)
        port = listener.sockets[0].getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await proto.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quicfwd")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on")
    parser.add_argument("--target", help="server: TCP HOST:PORT to forward streams to")
    parser.add_argument("--cert", help="server: certificate PEM")
    parser.add_argument("--key", help="server: private key PEM")
    parser.add_argument("--server", help="client: QUIC server HOST:PORT")
    parser.add_argument("--ca", help="client: certificate to trust")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(run_server(args) if args.role == "server" else run_client(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
