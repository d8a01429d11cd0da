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
import time

from bench.sinkproto import MODE_ECHO, MODE_SINK, TOTAL, SinkCounter

log = logging.getLogger(__name__)

RECV_BUFFER = 1 << 20  # 1 MiB a recv: few syscalls per GB without a large resident buffer
THREAD_STACK = 256 << 10  # 1,000 idle echo connections must not cost 8 MiB of stack each
BACKLOG = 2048  # the idle-streams test opens 1,000 connections at once
# Confirm progress at most this often: a stream of small writes against the bulk direction makes
# some tunnels crawl (ssh -L across namespaces: 200 MB/s without, 22 MB/s with one per MiB).
ACK_INTERVAL_S = 0.05


def _sink(conn: socket.socket) -> None:
    counter = SinkCounter()
    conn.sendall(TOTAL.pack(0))  # tells the client the path is up before it starts the clock
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    acked = 0
    last_ack = time.monotonic()
    while not counter.finished:
        pending = counter.total > acked
        # With progress to confirm, wake up by the time the next confirmation is due even if no
        # more data comes (the sender may be waiting for exactly this confirmation).
        conn.settimeout(max(0.001, last_ack + ACK_INTERVAL_S - time.monotonic())
                        if pending else None)
        try:
            n = conn.recv_into(buf)
        except TimeoutError:
            n = -1
        if n == 0:
            return  # the client went away before the end record: nothing to report
        if n > 0:
            counter.feed(view[:n])
        now = time.monotonic()
        if counter.finished or (counter.total > acked and now - last_ack >= ACK_INTERVAL_S):
            conn.sendall(TOTAL.pack(counter.total))
            acked, last_ack = counter.total, now


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
