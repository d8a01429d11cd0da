"""UDP socket buffers: granted past the sysctl cap to a process that may, else a warning naming
the sysctl (tunnel/node/sockbuf.py).

Real sockets, and the cap read from /proc. The cap (`net.core.rmem_max`, `wmem_max`) is global,
not per network namespace, so no test changes it: each asks for twice the cap instead. As root
(CI) this process has CAP_NET_ADMIN; the capped case runs in a child that does not
(`setpriv --bounding-set -net_admin`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab.netns import require_netns
from rendezvous.server import RECEIVE_BUFFER, _bound
from tests.cli.test_cli_up import ENV, ROOT
from tests.support.privileges import root_with
from tunnel.node.sockbuf import granted, size_buffers
from tunnel.node.udp import SOCKET_BUFFER, UdpEndpoint

# The child: two sockets ask for more than the cap; each prints what it was granted.
CHILD = """
import json, logging, socket, sys
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
from tunnel.node.sockbuf import size_buffers
receive, send = int(sys.argv[1]), int(sys.argv[2])
for _ in range(2):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        print(json.dumps(size_buffers(sock, receive, send)), flush=True)
"""


def cap(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


can_drop_net_admin = root_with("setpriv", "CAP_NET_ADMIN, and dropping it in a child, need root")


def test_a_process_with_cap_net_admin_gets_more_than_the_cap(
        caplog: pytest.LogCaptureFixture) -> None:
    require_netns(probe=can_drop_net_admin)
    receive, send = 2 * cap("rmem_max"), 2 * cap("wmem_max")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            caplog.at_level(logging.WARNING, logger="tunnel.node.sockbuf"):
        assert size_buffers(sock, receive, send) == (receive, send)
        assert granted(sock, socket.SO_RCVBUF) == receive
    assert caplog.records == []


def test_without_it_the_buffer_is_capped_and_one_warning_names_the_sysctl() -> None:
    require_netns(probe=can_drop_net_admin)
    rmem, wmem = cap("rmem_max"), cap("wmem_max")
    out = subprocess.run(
        ["setpriv", "--bounding-set", "-net_admin", sys.executable, "-c", CHILD,
         str(2 * rmem), str(2 * wmem)],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=30, check=True)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [[rmem, wmem]] * 2
    warnings = [line.removeprefix("tunnel.node.sockbuf ") for line in out.stderr.splitlines()
                if line.startswith("tunnel.node.sockbuf ")]
    assert len(warnings) == 2, out.stderr  # one per sysctl, not one per socket
    for line, direction, sysctl, asked in zip(
            warnings, ("receive", "send"), ("rmem_max", "wmem_max"), (2 * rmem, 2 * wmem),
            strict=True):
        assert line.startswith(f"WARNING the UDP {direction} buffer is "), line
        assert f"`sysctl -w net.core.{sysctl}={asked}` as root" in line


def test_a_node_socket_and_a_rendezvous_socket_ask_for_their_buffers() -> None:
    require_netns(probe=can_drop_net_admin)  # as root the size is granted whatever the cap

    async def bind() -> tuple[int, int]:
        endpoint = UdpEndpoint.bind(("127.0.0.1", 0), lambda data, addr, segment: None)
        try:
            return (granted(endpoint.sock, socket.SO_RCVBUF),
                    granted(endpoint.sock, socket.SO_SNDBUF))
        finally:
            endpoint.close()

    assert asyncio.run(bind()) == (SOCKET_BUFFER, SOCKET_BUFFER)

    with _bound("127.0.0.1", 0) as rendezvous:
        assert granted(rendezvous, socket.SO_RCVBUF) == RECEIVE_BUFFER
