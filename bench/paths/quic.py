"""The aioquic peer: bench/quicfwd.py as two processes, TCP carried on QUIC streams."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from bench.certs import write_self_signed
from bench.paths.base import READY_TIMEOUT_S, ChildrenMixin, Target, Unavailable
from bench.procs import Child, json_field


class Quic(ChildrenMixin):
    name = "aioquic"
    description = "TCP over one aioquic connection (stream per TCP connection), 1200-byte datagrams"

    def __init__(self) -> None:
        super().__init__()
        self._dir: Path | None = None

    def start(self, target: Target) -> int:
        if importlib.util.find_spec("aioquic") is None:
            raise Unavailable("aioquic is not installed (pip install '.[bench]')")
        self._dir = Path(tempfile.mkdtemp(prefix="ptunnel-bench-quic-"))
        cert, key = write_self_signed(self._dir)
        server = self.spawn("server", Child("quic server", [
            sys.executable, "-m", "bench.quicfwd", "server",
            "--target", f"{target.host}:{target.port}", "--cert", str(cert), "--key", str(key),
        ]))
        udp_port = server.wait_line(json_field("port", int), READY_TIMEOUT_S)
        client = self.spawn("client", Child("quic client", [
            sys.executable, "-m", "bench.quicfwd", "client",
            "--server", f"127.0.0.1:{udp_port}", "--ca", str(cert),
        ]))
        return client.wait_line(json_field("port", int), READY_TIMEOUT_S)

    def stop(self) -> None:
        super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
