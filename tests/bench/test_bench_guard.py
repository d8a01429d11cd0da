"""The hyperdht loopback-bootstrap guard (bench/guard.py): never the public DHT."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.guard import (
    BootstrapNode,
    NonLoopbackBootstrap,
    parse_bootstrap_node,
    require_loopback_bootstrap,
)


def test_loopback_nodes_are_accepted() -> None:
    assert require_loopback_bootstrap(["127.0.0.1:49737", " 127.8.9.10:1 ", "[::1]:65535"]) == [
        BootstrapNode("127.0.0.1", 49737), BootstrapNode("127.8.9.10", 1),
        BootstrapNode("::1", 65535),
    ]


@pytest.mark.parametrize("node", [
    "88.99.3.86:49737",  # hyperdht's public default, by address
    "node1.hyperdht.org:49737",  # and by name
    "88.99.3.86@node1.hyperdht.org:49737",  # hyperdht's suggested-IP form
    "localhost:49737",  # a name: could resolve anywhere
    "0.0.0.0:49737", "10.0.0.1:1", "[::]:1", "[2001:db8::1]:1",
    "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", ":1", "127.0.0.1:x",
])
def test_anything_else_is_refused(node: str) -> None:
    with pytest.raises(NonLoopbackBootstrap):
        parse_bootstrap_node(node)


def test_one_bad_node_spoils_the_list_and_empty_is_refused() -> None:
    with pytest.raises(NonLoopbackBootstrap):
        require_loopback_bootstrap(["127.0.0.1:1", "142.93.90.113:49737"])
    with pytest.raises(NonLoopbackBootstrap):
        require_loopback_bootstrap([])


@given(st.text(max_size=40))
def test_guard_only_ever_accepts_loopback(text: str) -> None:
    try:
        node = parse_bootstrap_node(text)
    except NonLoopbackBootstrap:
        return
    assert node.host.startswith("127.") or node.host == "::1"
    assert 1 <= node.port <= 65535


PEERS = Path(__file__).resolve().parents[2] / "bench" / "peers"
@pytest.mark.parametrize("bootstrap", [None, "88.99.3.86:49737", "127.0.0.1:1,10.0.0.1:1",
                                       "node1.hyperdht.org:49737"])
def test_the_node_forwarder_refuses_non_loopback_bootstrap(bootstrap: str | None) -> None:
    # The check runs before hyperdht is imported: only node is needed (.ci/run installs it).
    assert shutil.which("node") is not None, "install nodejs"
    argv = ["node", str(PEERS / "hyperforward.mjs"), "client", "--key", "ab" * 32]
    if bootstrap is not None:
        argv += ["--bootstrap", bootstrap]
    done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stdout == b""  # never reached "ready"
    assert b"bootstrap" in done.stderr
