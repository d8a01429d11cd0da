"""The copy relay (`bench/copy_relay.py`) as a path: ptunnel's shape with none of its work."""

from __future__ import annotations

import socket
import sys

from bench.paths.base import READY_TIMEOUT_S, ChildrenMixin, Target, free_port
from bench.procs import Child, json_field


class CopyRelay(ChildrenMixin):
    name = "copy relay"
    description = "TCP -> UDP -> UDP -> TCP in two uvloop processes, no cipher (latency only)"

    def start(self, target: Target) -> int:
        listen = free_port()
        connect_udp, expose_udp = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        relay = [sys.executable, "-m", "bench.copy_relay"]
        ready = json_field("ready", bool)
        self.spawn("expose", Child("copy-relay-expose", [
            *relay, "expose", "--udp", str(expose_udp), "--peer", str(connect_udp),
            "--target", str(target.port),
        ])).wait_line(ready, READY_TIMEOUT_S)
        self.spawn("connect", Child("copy-relay-connect", [
            *relay, "connect", "--udp", str(connect_udp), "--peer", str(expose_udp),
            "--listen", str(listen),
        ])).wait_line(ready, READY_TIMEOUT_S)
        return listen
