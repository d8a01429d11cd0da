"""ptunnel itself: rendezvous, expose and connect as three processes, as users run them.

    ptunnel init --home A; ptunnel invite --home A  -> CODE; ptunnel join CODE --home B
    ptunnel rendezvous --listen 127.0.0.1:R --db PATH
    ptunnel expose HOST:PORT --as NAME --rendezvous 127.0.0.1:R --home A   (one line when ready)
    ptunnel connect NAME -L 127.0.0.1:L --rendezvous 127.0.0.1:R --home B  (one line when ready)

Until `ptunnel --help` lists rendezvous, expose and connect, the path reports itself unavailable.
The rendezvous server is infrastructure: it is kept out of the per-GiB CPU and memory figures.

Each build has its own row: `Ptunnel()` runs the default build (the mypyc-compiled core where it
was built), `Ptunnel(pure=True)` sets PTUNNEL_PURE=1 for every ptunnel process it starts. The
description quotes `ptunnel --version`, which names the build that ran.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from pathlib import Path

from bench.paths.base import (
    LOOPBACK,
    READY_TIMEOUT_S,
    ChildrenMixin,
    Placement,
    Target,
    cold_start_of,
    free_port,
    in_ns,
)
from bench.procs import Child, Unavailable, run_ok

PTUNNEL = [sys.executable, "-m", "tunnel"]
PURE_ENV = {"PTUNNEL_PURE": "1"}
NEEDED = ("rendezvous", "expose", "connect")
SERVICE = "bench"
RENDEZVOUS_SETTLE_S = 1.0  # the server may print nothing; alive after this long counts as up


def free_udp_and_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (we do not know which the server uses)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise Unavailable("no free port for the rendezvous server")


def missing_commands(help_text: str) -> list[str]:
    words = set(help_text.split())
    return [c for c in NEEDED if c not in words]


class Ptunnel(ChildrenMixin):
    name = "ptunnel"
    description = "ptunnel connect -> expose via a local rendezvous, separate processes"

    def __init__(self, placement: Placement = LOOPBACK, rendezvous_ns: str | None = None,
                 rendezvous_hosts: tuple[str, str, str] | None = None,
                 pure: bool = False) -> None:
        """`rendezvous_hosts`: (listen on, reached from the expose side, from the connect side);
        all 127.0.0.1 by default. The NAT lab puts the server in the router namespace.
        `pure`: run the pure-Python build (PTUNNEL_PURE=1)."""
        super().__init__()
        self._env = PURE_ENV if pure else None
        if pure:
            self.name = "ptunnel pure"
        self.placement = placement
        self._rdv_ns = rendezvous_ns
        self._rdv_hosts = rendezvous_hosts or ("127.0.0.1", "127.0.0.1", "127.0.0.1")
        self._rdv_port = 0
        self._dir: Path | None = None
        self._rendezvous: Child | None = None

    def start(self, target: Target) -> int:
        missing = missing_commands(run_ok([*PTUNNEL, "--help"]))
        if missing:
            raise Unavailable(f"this ptunnel has no `{'`/`'.join(missing)}` command yet")
        version = run_ok([*PTUNNEL, "--version"], env=self._env).strip()
        self.description = f"{type(self).description}; {version}"
        self._dir = Path(tempfile.mkdtemp(prefix="ptunnel-bench-"))
        home_a, home_b = self._dir / "expose-home", self._dir / "connect-home"
        run_ok([*PTUNNEL, "init", "--home", str(home_a)])
        # The cold-start client is a third node of its own: a second copy of the running
        # `connect` node would be the same identity twice, which is not what a user does.
        for home in (home_b, self._dir / "cold-home"):
            code = run_ok([*PTUNNEL, "invite", "--home", str(home_a)]).split()
            if not code:
                raise Unavailable("`ptunnel invite` printed no code")
            run_ok([*PTUNNEL, "join", code[-1], "--home", str(home)])
        self._rdv_port = free_udp_and_tcp_port()
        listen, from_server, _ = self._rdv_hosts
        self._rendezvous = Child("ptunnel rendezvous", in_ns(self._rdv_ns, [
            *PTUNNEL, "rendezvous", "--listen", f"{listen}:{self._rdv_port}",
            "--db", str(self._dir / "rendezvous.db"),
        ]), env=self._env)
        self._rendezvous.wait_started(RENDEZVOUS_SETTLE_S)
        expose = self.spawn("expose", Child("ptunnel expose", in_ns(self.placement.server_ns, [
            *PTUNNEL, "expose", f"{target.host}:{target.port}", "--as", SERVICE,
            "--rendezvous", f"{from_server}:{self._rdv_port}", "--home", str(home_a),
        ]), env=self._env))
        expose.wait_line(lambda line: line or None, READY_TIMEOUT_S)
        port = free_port()
        connect = self.spawn("connect", Child("ptunnel connect",
                                              self._connect_argv(port, "connect-home"),
                                              env=self._env))
        connect.wait_line(lambda line: line or None, READY_TIMEOUT_S)
        connect.wait_listening(port, READY_TIMEOUT_S)
        return port

    def _connect_argv(self, port: int, home: str) -> list[str]:
        assert self._dir is not None
        return in_ns(self.placement.client_ns, [
            *PTUNNEL, "connect", SERVICE, "-L", f"127.0.0.1:{port}",
            "--rendezvous", f"{self._rdv_hosts[2]}:{self._rdv_port}",
            "--home", str(self._dir / home),
        ])

    def cold_start(self, timeout: float) -> float | None:
        """From launching `ptunnel connect` to the first byte echoed through its port."""
        return cold_start_of("ptunnel connect (cold)",
                             lambda port: self._connect_argv(port, "cold-home"), timeout,
                             env=self._env)

    def stop(self) -> None:
        super().stop()
        if self._rendezvous is not None:
            self._rendezvous.stop()
            self._rendezvous = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
