"""One network across two rendezvous servers, through real Linux NATs: A behind a NAT registers
at server 1, B behind another at server 2, both servers on one Redis (in the rendezvous
namespace); `connect` by name takes a direct path, and the data arrives intact. Behind
symmetric NATs the two are relayed server to server.

Which path carried the data is judged by the kernel's byte counters on the rendezvous host's
link, as in `test_natlab_tunnel.py`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lab.netns import RDV_IP
from tests.conftest import LabFactory
from tests.support.tunnels import ENV, SERVICE_PORT, MiB, Tunnels, ptunnel, ready_line, upload

pytestmark = pytest.mark.natlab

REDIS_PORT = 6390  # inside the rendezvous namespace's own loopback
SERVER_2 = f"{RDV_IP}:7100"


def two_server_lab(natlab: LabFactory, tmp_path: Path, kinds: list[str]) -> Tunnels:
    """A lab whose rendezvous namespace runs Redis and servers s1 (7000) and s2 (7100) on it,
    and site 1 exposing a sha-sink as "box" at server 1."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    lab = natlab(kinds)
    tunnels = Tunnels(lab, tmp_path)
    (tmp_path / "redis").mkdir()
    redis = lab.spawn(lab.rdv, binary, "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                      "--dir", str(tmp_path / "redis"), "--save", "", "--appendonly", "yes",
                      "--appendfsync", "always", "--loglevel", "notice")
    redis.expect_text("Ready to accept connections", timeout=15)
    url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    # One --db directory for both: one `rendezvous.key`, the deployment's key.
    db = str(tmp_path / "rdv" / "rendezvous.db")
    for listen, server_id in ((f"{RDV_IP}:7000", "s1"), (SERVER_2, "s2")):
        proc = lab.spawn(lab.rdv, *ptunnel(
            "rendezvous", "--listen", listen, "--db", db, "--home", str(tmp_path / "rdv-home"),
            "--store", url, "--server-id", server_id), env=ENV)
        proc.expect_text("rendezvous listening", timeout=15)
        proc.expect_text("receiving pushes", timeout=15)
    tunnels.service(lab.sites[0], "sha-sink", str(SERVICE_PORT))
    tunnels.expose(lab.sites[0], "box")  # at server 1 (7000)
    return tunnels


def upload_through_server_2(natlab: LabFactory, tmp_path: Path, kinds: list[str], path: str,
                            size: int) -> int:
    """In a two-server lab with NATs of `kinds`, the laptop (site 2) connects to "box" through
    server 2 only (the later --rendezvous wins), on a `path` ("direct" or "relay") it asserts,
    and uploads `size` bytes: the bytes the rendezvous host's link carried meanwhile."""
    tunnels = two_server_lab(natlab, tmp_path, kinds)
    laptop = tunnels.lab.sites[1]
    connector = tunnels.connect(laptop, "box", "--rendezvous", SERVER_2)
    line = ready_line(connector, timeout=40)
    assert path in line, line
    before = tunnels.rdv_bytes()
    upload(tunnels, laptop, size)
    return tunnels.rdv_bytes() - before


def test_nodes_at_two_servers_connect_by_name_directly(natlab: LabFactory,
                                                       tmp_path: Path) -> None:
    carried = upload_through_server_2(natlab, tmp_path, ["cone", "cone"], "direct", 8 * MiB)
    assert carried < MiB  # the data did not cross the rendezvous host


def test_nodes_at_two_servers_that_cannot_punch_are_relayed_server_to_server(
        natlab: LabFactory, tmp_path: Path) -> None:
    """Symmetric NATs both sides: B's packets go to server 2, which hands them to server 1
    (Redis pub/sub), which sends them to A; and back. Intact, and through the rendezvous."""
    carried = upload_through_server_2(natlab, tmp_path, ["symmetric", "symmetric"], "relay",
                                      4 * MiB)
    assert carried > 2 * 4 * MiB  # in and out of the rendezvous host
