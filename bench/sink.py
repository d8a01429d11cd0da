"""The one sink/echo server every path forwards to: `python -m bench.sink [--port N]`.

Runs as its own process (so the load generator and the server do not share a GIL), one thread a
connection, and prints `{"port": N}` when listening on 127.0.0.1. Protocol: bench/sinkproto.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading

from bench.sinkproto import MODE_ECHO, MODE_SINK, TOTAL, SinkCounter

log = logging.getLogger(__name__)

RECV_BUFFER = 1 << 20  # 1 MiB a recv: few syscalls per GB without a large resident buffer
THREAD_STACK = 256 << 10  # 1,000 idle echo connections must not cost 8 MiB of stack each
BACKLOG = 2048  # the idle-streams test opens 1,000 connections at once


def _sink(conn: socket.socket) -> None:
    counter = SinkCounter()
    conn.sendall(TOTAL.pack(0))  # tells the client the path is up before it starts the clock
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            return  # the client went away before the end record: nothing to report
        if counter.feed(view[:n]):
            conn.sendall(TOTAL.pack(counter.total))
        if counter.finished:
            return


def _echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def _serve(conn: socket.socket) -> None:
    with conn:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = conn.recv(1)
            if mode == MODE_SINK:
                _sink(conn)
            elif mode == MODE_ECHO:
                _echo(conn)
        except OSError as exc:  # a peer reset is normal when a benchmark tears a path down
            log.debug("connection ended: %s", exc)


def serve(listener: socket.socket) -> None:
    threading.stack_size(THREAD_STACK)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(BACKLOG)
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    try:
        serve(listener)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
