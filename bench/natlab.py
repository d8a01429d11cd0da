"""NAT-lab benchmarks (root only, `--natlab`): goodput over a lossy routed path, and the relay.

Three namespaces per run, named with a per-run prefix and always deleted in `finally`:

    A (client) 198.51.100.2 ── 198.51.100.1 R (router) 203.0.113.1 ── 203.0.113.2 B (server)

Loss is made in R with nftables `numgen random` drops on its forward hook, so every packet that
crosses between A and B (TCP segments, ACKs, UDP datagrams alike) has the same chance to die,
while traffic to R itself (ptunnel's rendezvous) is spared. The sink runs in B; the load generator
runs in A (`bench.loadcli`). Paths: plain TCP A→B, `ssh -L`, TCP inside `wireguard-go` (the
Debian package), and ptunnel (rendezvous in R). The relay test blocks direct UDP between A and B
so ptunnel must fall back to relaying through R. Only documentation addresses inside these
namespaces are used (see /work/shared/NATLAB.md).
"""

from __future__ import annotations

import base64
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench.paths.base import Placement, Target, in_ns, need_tool
from bench.paths.ptunnel import Ptunnel
from bench.paths.ssh import Ssh
from bench.procs import Child, Unavailable, json_field, run_ok
from bench.stats import median
from bench.table import Row, SpanRow, fmt_rate, format_table

log = logging.getLogger(__name__)

A_ADDR, RA_ADDR = "198.51.100.2", "198.51.100.1"  # TEST-NET-2: the client's "internet" link
B_ADDR, RB_ADDR = "203.0.113.2", "203.0.113.1"  # TEST-NET-3: the server's link
WG_A, WG_B = "10.77.0.1", "10.77.0.2"  # inside the WireGuard tunnel
WG_PORT = 51820
WG_MTU = 1420  # wg-quick's default for a 1500-byte underlay
WG_SOCKETS = Path("/var/run/wireguard")
LOSS_LEVELS = (0, 1, 5)  # percent of forwarded packets dropped at random
READY_TIMEOUT_S = 30.0  # ptunnel may spend 5 s failing to punch before it relays


@dataclass(slots=True)
class NatlabResult:
    loss_levels: tuple[int, ...] = LOSS_LEVELS
    goodput: dict[str, dict[int, float | None]] = field(default_factory=dict)  # median, B/s
    samples: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    relay: float | None = None
    relay_unavailable: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"loss_percent": list(self.loss_levels),
                "goodput_bytes_per_s": {p: {str(k): v for k, v in by.items()}
                                        for p, by in self.goodput.items()},
                "samples_bytes_per_s": {p: {str(k): v for k, v in by.items()}
                                        for p, by in self.samples.items()},
                "unavailable": self.unavailable, "errors": self.errors,
                "relay_bytes_per_s": self.relay, "relay_unavailable": self.relay_unavailable}


def goodput_table(doc: dict[str, Any], markdown: bool = False) -> str:
    levels = doc["loss_percent"]
    headers = ["path", *[f"{n}% loss MB/s" for n in levels]]
    rows: list[Row] = []
    for path, by in doc["goodput_bytes_per_s"].items():
        rows.append([path, *[fmt_rate(by.get(str(n))) for n in levels]])
    for path, why in doc["unavailable"].items():
        rows.append(SpanRow(path, f"unavailable: {why}"))
    if doc["relay_bytes_per_s"] is not None:
        rows.append(["ptunnel via relay", fmt_rate(doc["relay_bytes_per_s"]),
                     *["" for _ in levels[1:]]])
    elif doc["relay_unavailable"]:
        rows.append(SpanRow("ptunnel via relay", f"unavailable: {doc['relay_unavailable']}"))
    return format_table(headers, rows, markdown=markdown)


class Lab:
    """The three namespaces and the lossy router between them."""

    def __init__(self) -> None:
        prefix = f"pb{os.getpid() % 100000}"  # short: interface names are at most 15 chars
        self.a, self.r, self.b = f"{prefix}a", f"{prefix}r", f"{prefix}b"
        self.table = f"{prefix}loss"
        self._made: list[str] = []

    def ip(self, *args: str) -> None:
        run_ok(["ip", *args])

    def up(self) -> None:
        for ns in (self.a, self.r, self.b):
            self.ip("netns", "add", ns)
            self._made.append(ns)
            self.ip("-n", ns, "link", "set", "lo", "up")
        self.ip("link", "add", "a0", "netns", self.a, "type", "veth", "peer", "name", "ra",
                "netns", self.r)
        self.ip("link", "add", "b0", "netns", self.b, "type", "veth", "peer", "name", "rb",
                "netns", self.r)
        for ns, dev, addr in ((self.a, "a0", A_ADDR), (self.r, "ra", RA_ADDR),
                              (self.r, "rb", RB_ADDR), (self.b, "b0", B_ADDR)):
            self.ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            self.ip("-n", ns, "link", "set", dev, "up")
        self.ip("-n", self.a, "route", "add", "default", "via", RA_ADDR)
        self.ip("-n", self.b, "route", "add", "default", "via", RB_ADDR)
        run_ok(in_ns(self.r, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))

    def _nft(self, rules: list[str]) -> None:
        if self._has_table():
            run_ok(in_ns(self.r, ["nft", "delete", "table", "inet", self.table]))
        if rules:
            script = (f"table inet {self.table} {{\n chain lossy {{\n"
                      "  type filter hook forward priority 0; policy accept;\n"
                      + "".join(f"  {r}\n" for r in rules) + " }\n}\n")
            path = Path(f"/tmp/{self.table}.nft")
            path.write_text(script)
            try:
                run_ok(in_ns(self.r, ["nft", "-f", str(path)]))
            finally:
                path.unlink()

    def _has_table(self) -> bool:
        listed = run_ok(in_ns(self.r, ["nft", "list", "tables"]))
        return f"inet {self.table}" in listed

    def set_path(self, loss_percent: int, block_direct_udp: bool = False) -> None:
        rules = []
        if block_direct_udp:  # no direct UDP between the two ends: only a relay can connect
            rules += [f"ip saddr {A_ADDR} ip daddr {B_ADDR} meta l4proto udp drop",
                      f"ip saddr {B_ADDR} ip daddr {A_ADDR} meta l4proto udp drop"]
        if loss_percent:
            rules.append(f"numgen random mod 100 lt {loss_percent} drop")
        self._nft(rules)

    def down(self) -> None:
        for ns in reversed(self._made):
            try:
                run_ok(["ip", "netns", "del", ns])
            except Unavailable as exc:
                log.warning("could not delete namespace %s: %s", ns, exc)
        self._made.clear()


def _wg_key() -> tuple[str, str]:
    key = X25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


class WireGuard:
    """wireguard-go in A and B, peered over the lossy path; TCP then runs inside it."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.children: list[Child] = []
        self._keyfiles: list[Path] = []

    def start(self) -> None:
        need_tool("wireguard-go")
        need_tool("wg")
        keys = {self.lab.a: _wg_key(), self.lab.b: _wg_key()}
        ends = ((self.lab.a, "wga", WG_A, self.lab.b, B_ADDR, WG_B),
                (self.lab.b, "wgb", WG_B, self.lab.a, A_ADDR, WG_A))
        for ns, dev, inner, peer_ns, peer_addr, peer_inner in ends:
            name = f"{self.lab.table[:-4]}{dev}"  # per-run prefix: the UAPI socket is global
            child = Child(f"wireguard-go {name}", in_ns(ns, ["wireguard-go", "-f", name]),
                          env={"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"})
            self.children.append(child)
            deadline = time.monotonic() + 10
            while not (WG_SOCKETS / f"{name}.sock").exists():
                if child.proc.poll() is not None or time.monotonic() > deadline:
                    raise Unavailable(f"wireguard-go did not start: {child.stderr_tail()}")
                time.sleep(0.05)
            keyfile = Path(f"/tmp/{name}.key")
            keyfile.write_text(keys[ns][0] + "\n")
            keyfile.chmod(0o600)
            self._keyfiles.append(keyfile)
            run_ok(in_ns(ns, ["wg", "set", name, "private-key", str(keyfile),
                              "listen-port", str(WG_PORT), "peer", keys[peer_ns][1],
                              "endpoint", f"{peer_addr}:{WG_PORT}",
                              "allowed-ips", f"{peer_inner}/32"]))
            run_ok(in_ns(ns, ["ip", "addr", "add", f"{inner}/24", "dev", name]))
            run_ok(in_ns(ns, ["ip", "link", "set", name, "mtu", str(WG_MTU), "up"]))

    def stop(self) -> None:
        for child in self.children:
            child.stop()
        for keyfile in self._keyfiles:
            keyfile.unlink(missing_ok=True)


def _goodput(lab: Lab, host: str, port: int, seconds: float) -> float:
    out = run_ok(in_ns(lab.a, [sys.executable, "-m", "bench.loadcli", "bulk", "--host", host,
                               "--port", str(port), "--seconds", str(seconds)]),
                 timeout=seconds + 120)
    rate = json_field("rate", float)(out.strip().splitlines()[-1])
    if rate is None:
        raise Unavailable(f"load generator said {out.strip()!r}")
    return rate


def run_natlab(seconds: float, rounds: int, progress: Callable[[str], None]) -> NatlabResult:
    result = NatlabResult()
    if os.geteuid() != 0:
        result.unavailable["all"] = "the NAT lab needs root"
        return result
    for tool in ("ip", "nft"):
        try:
            need_tool(tool)
        except Unavailable as exc:
            result.unavailable["all"] = str(exc)
            return result
    lab = Lab()
    sink: Child | None = None
    wg = WireGuard(lab)
    stoppers: list[Callable[[], None]] = []
    try:
        lab.up()
        sink = Child("sink (B)", in_ns(lab.b, [sys.executable, "-m", "bench.sink",
                                               "--host", "0.0.0.0"]))
        sink_port = sink.wait_line(json_field("port", int), 10.0)
        in_b = Target("127.0.0.1", sink_port)
        ends = Placement(client_ns=lab.a, server_ns=lab.b, server_host=B_ADDR)
        routes: dict[str, tuple[str, int]] = {"TCP (no tunnel)": (B_ADDR, sink_port)}
        ssh = Ssh(ends)

        def start_wg() -> tuple[str, int]:
            wg.start()
            return WG_B, sink_port

        ptunnel = Ptunnel(ends, rendezvous_ns=lab.r, rendezvous_hosts=("0.0.0.0", RB_ADDR,
                                                                       RA_ADDR))
        starters: list[tuple[str, Callable[[], tuple[str, int]], Callable[[], None]]] = [
            ("ssh -L", lambda: ("127.0.0.1", ssh.start(in_b)), ssh.stop),
            ("wireguard-go", start_wg, wg.stop),
            ("ptunnel", lambda: ("127.0.0.1", ptunnel.start(in_b)), ptunnel.stop),
        ]
        for name, start, stop in starters:
            progress(f"natlab: starting {name}")
            stoppers.append(stop)
            try:
                routes[name] = start()
            except Unavailable as exc:
                result.unavailable[name] = str(exc)
                progress(f"natlab: {name} unavailable: {exc}")
                stop()
        samples: dict[str, dict[int, list[float]]] = {n: {x: [] for x in LOSS_LEVELS}
                                                      for n in routes}
        names = list(routes)
        for rnd in range(rounds):
            for i, loss in enumerate(LOSS_LEVELS):
                lab.set_path(loss)
                k = (i + rnd) % len(names)  # alternate who goes first, as the loopback suite
                for name in names[k:] + names[:k]:
                    host, port = routes[name]
                    try:
                        rate = _goodput(lab, host, port, seconds)
                    except Unavailable as exc:
                        result.errors.append(f"{name} at {loss}% loss: {exc}")
                        progress(f"natlab: {name} at {loss}% loss failed: {exc}")
                        continue
                    samples[name][loss].append(rate)
                    progress(f"natlab [{rnd + 1}/{rounds}]: {name} at {loss}% loss: "
                             f"{rate / 1e6:,.1f} MB/s")
        result.samples = samples
        result.goodput = {n: {x: median(v) if v else None for x, v in by.items()}
                          for n, by in samples.items()}
        ptunnel.stop()
        _relay(lab, in_b, seconds, result, progress)
    except Unavailable as exc:
        result.errors.append(f"lab: {exc}")
        progress(f"natlab failed: {exc}")
    finally:
        for stop in stoppers:
            stop()
        if sink is not None:
            sink.stop()
        lab.down()
    return result


def _relay(lab: Lab, in_b: Target, seconds: float, result: NatlabResult,
           progress: Callable[[str], None]) -> None:
    if "ptunnel" in result.unavailable:
        result.relay_unavailable = result.unavailable["ptunnel"]
        return
    lab.set_path(0, block_direct_udp=True)
    relayed = Ptunnel(Placement(client_ns=lab.a, server_ns=lab.b, server_host=B_ADDR),
                      rendezvous_ns=lab.r, rendezvous_hosts=("0.0.0.0", RB_ADDR, RA_ADDR))
    try:
        progress("natlab: ptunnel with direct UDP blocked (relay)")
        port = relayed.start(in_b)
        result.relay = _goodput(lab, "127.0.0.1", port, seconds)
        progress(f"natlab: ptunnel via relay: {result.relay / 1e6:,.1f} MB/s")
    except Unavailable as exc:
        result.relay_unavailable = str(exc)
        progress(f"natlab: relay unavailable: {exc}")
    finally:
        relayed.stop()
