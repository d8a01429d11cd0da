"""The hyperdht peer: a hypertele-style forwarder (bench/peers/hyperforward.mjs) on a local testnet.

Three Node processes: a DHT testnet bound to 127.0.0.1, a server that announces a keypair and pipes
streams to the sink, and a client that listens on TCP and dials the server's key. hyperdht's
default bootstrap is Holepunch's public DHT, so the testnet's bootstrap list goes through
`require_loopback_bootstrap` before any server or client is started with it (and the Node script
checks again). `npm ci` installs the pinned hyperdht into bench/peers/node_modules when missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.guard import NonLoopbackBootstrap, require_loopback_bootstrap
from bench.paths.base import (
    READY_TIMEOUT_S,
    ChildrenMixin,
    Target,
    cold_start_of,
    need_tool,
)
from bench.procs import Child, Unavailable, json_field, run_ok

PEERS = Path(__file__).resolve().parent.parent / "peers"
SCRIPT = PEERS / "hyperforward.mjs"
NPM_TIMEOUT_S = 300.0
TESTNET_SIZE = 3  # DHT nodes in the testnet: enough for announce/lookup to find a route


def hyperdht_version() -> str | None:
    try:
        meta = json.loads((PEERS / "node_modules" / "hyperdht" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return version if isinstance(version, str) else None


def ensure_installed() -> str:
    """The installed hyperdht version, running `npm ci` under bench/peers/ first if needed."""
    need_tool("node")
    version = hyperdht_version()
    if version is None:
        npm = need_tool("npm")
        lock = (PEERS / "package-lock.json").exists()
        run_ok([npm, "ci" if lock else "install", "--no-audit", "--no-fund"], cwd=str(PEERS),
               timeout=NPM_TIMEOUT_S)
        version = hyperdht_version()
        if version is None:
            raise Unavailable("npm finished but hyperdht is not in bench/peers/node_modules")
    return version


class Hyper(ChildrenMixin):
    name = "hyperdht"
    description = "hypertele-style TCP forward over hyperdht (Node + UDX) via a loopback testnet"

    def __init__(self) -> None:
        super().__init__()
        self._bootstrap = ""
        self._key = ""
        self._testnet: Child | None = None

    def start(self, target: Target) -> int:
        version = ensure_installed()
        self.description = f"{self.description}, hyperdht {version}"
        node = need_tool("node")
        # The testnet is infrastructure, not a forwarding process: kept out of CPU/RSS totals.
        self._testnet = Child("hyperdht testnet", [node, str(SCRIPT), "testnet",
                                                   "--size", str(TESTNET_SIZE)])
        listed = self._testnet.wait_line(json_field("bootstrap", list), READY_TIMEOUT_S)
        try:
            nodes = require_loopback_bootstrap(str(n) for n in listed)
        except NonLoopbackBootstrap as exc:
            raise Unavailable(f"refusing to start: {exc}") from exc
        self._bootstrap = ",".join(str(n) for n in nodes)
        server = self.spawn("server", Child("hyperdht server", [
            node, str(SCRIPT), "server", "--bootstrap", self._bootstrap,
            "--target", f"{target.host}:{target.port}",
        ]))
        self._key = server.wait_line(json_field("publicKey", str), READY_TIMEOUT_S)
        client = self.spawn("client", Child("hyperdht client", self._client_argv(0)))
        return client.wait_line(json_field("port", int), READY_TIMEOUT_S)

    def _client_argv(self, port: int) -> list[str]:
        return ["node", str(SCRIPT), "client", "--bootstrap", self._bootstrap, "--key", self._key,
                "--listen", f"127.0.0.1:{port}"]

    def cold_start(self, timeout: float) -> float | None:
        """A fresh client process (DHT bootstrap, lookup, holepunch handshake) to first byte."""
        return cold_start_of("hyperdht client (cold)", self._client_argv, timeout)

    def stop(self) -> None:
        super().stop()
        if self._testnet is not None:
            self._testnet.stop()
            self._testnet = None
