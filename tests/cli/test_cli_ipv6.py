"""IPv6 and host names wherever an address is accepted, as a user types them: a rendezvous on
`[::]` (dual-stack: IPv4 nodes reach it too), nodes using `PTUNNEL_RENDEZVOUS=[::1]:PORT` or
`--rendezvous localhost:PORT`, and `connect -L [::1]:PORT`. (Before: `Address family for
hostname not supported`.)"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli_live import echo_server, echoes
from tests.support.cli import init, join, ptunnel, running
from tests.support.loopback import free_port, free_udp_pair


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this kernel has no IPv6 ::1")


@pytest.fixture
def dual_stack_rendezvous(tmp_path: Path) -> Iterator[int]:
    """`ptunnel rendezvous --listen [::]:PORT`; yields PORT."""
    port = free_udp_pair()
    with running("rendezvous", "--listen", f"[::]:{port}", "--db", str(tmp_path / "r.db"),
                 "--home", str(tmp_path / "r")) as server:
        assert f"rendezvous listening on [::]:{port} " in server.wait_for("listening")
        yield port


def test_a_v6_rendezvous_and_v6_listen(tmp_path: Path, dual_stack_rendezvous: int) -> None:
    port = dual_stack_rendezvous
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    local = free_port()
    with echo_server() as web, running("expose", str(web), "--as", "web", "--home", str(home),
                                       "--rendezvous", f"[::1]:{port}") as exposer:
        # the user-facing line: its INFO log line (also "exposing ...") can come first
        assert "(public endpoint [::1]:" in exposer.wait_for("(public endpoint")
        # The environment variable, as the issue typed it.
        done = ptunnel("ping", "web", "-n", "2", "-i", "0.1", "--home", str(laptop),
                       env={"PTUNNEL_RENDEZVOUS": f"[::1]:{port}"})
        assert done.returncode == 0, done.stderr
        assert "reply from web seq=0 rtt=" in done.stdout
        assert " via direct lan [::1]:" in done.stdout, done.stdout
        with running("connect", "web", "-L", f"[::1]:{local}", "--home", str(laptop),
                     "--rendezvous", f"[::1]:{port}") as connect:
            ready = connect.wait_for("ready:")
            assert ready.startswith(f"ready: web on [::1]:{local}: direct lan [::1]:"), ready
            assert echoes(local, host="::1")
            (instance,) = json.loads(ptunnel("status", "--json", "--home", str(laptop)).stdout)
            assert instance["rendezvous"]["server"] == f"[::1]:{port}"
        # The same dual-stack server over IPv4, by host name.
        done = ptunnel("list", "--home", str(laptop), "--rendezvous", f"localhost:{port}")
        assert done.returncode == 0, done.stderr
        assert "web" in done.stdout and "[::1]:" in done.stdout, done.stdout
        done = ptunnel("netcheck", "--home", str(laptop), "--rendezvous", f"[::1]:{port}")
        assert done.returncode == 0, done.stderr
        assert "public endpoint: [::1]:" in done.stdout, done.stdout
