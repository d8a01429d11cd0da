"""A NAT lab of real Linux network namespaces: an "internet", a rendezvous host and NATed sites.

Follows `/work/shared/NATLAB.md`. Topology (namespace names carry a per-run prefix, `ptl<pid>`):

    site i host (10.i.0.2) -- lan | NAT router i | wan (203.0.113.8i+2/29) --+
                                                                           |-- inet (router)
    rendezvous host (192.0.2.1/24) -- eth0 ----------------------- rdv ----+   192.0.2.254

NAT kinds (RFC 4787 terms):
- "cone": MASQUERADE; endpoint-independent mapping, address-and-port-dependent filtering.
- "symmetric": MASQUERADE --random-fully; a new random port for every new destination.
- "fullcone": MASQUERADE plus DNAT of every inbound UDP to the host (endpoint-independent
  filtering).
- "none": no NAT router; the host sits directly on the public link (a server-like node).

Every NAT router drops unsolicited inbound packets on FORWARD *and* INPUT, as home routers do:
accepting them on INPUT would leave conntrack entries that steal the ports of later mappings.

Use `Lab` as a context manager (or call `close()`): it deletes its namespaces and kills the
processes it started, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Any

RDV_IP = "192.0.2.1"
INET_RDV_IP = "192.0.2.254"
KINDS = ("cone", "symmetric", "fullcone", "none")


def netns_available() -> tuple[bool, str]:
    """Whether this process can build namespaces; the reason when not."""
    if os.geteuid() != 0:
        return False, "needs root"
    for tool in ("ip", "iptables", "conntrack"):
        if shutil.which(tool) is None:
            return False, f"{tool} not installed"
    name = f"ptlprobe{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, f"ip netns add failed: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return True, ""


def reap_stale_labs() -> list[str]:
    """Delete lab namespaces left by runs that were killed (their pid no longer exists)."""
    listed = sh("ip", "netns", "list", check=False).stdout.split("\n")
    reaped = []
    for line in listed:
        name = line.split(" ")[0]
        match = re.fullmatch(r"ptl(\d+)x\d+-\w+", name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            sh("ip", "netns", "del", name, check=False)
            reaped.append(name)
    return reaped


def require_netns(environ: Mapping[str, str] | None = None,
                  probe: Callable[[], tuple[bool, str]] = netns_available) -> None:
    """Skip the calling test when no lab can be built, or FAIL it when PTUNNEL_REQUIRE_NETNS=1
    (CI must not silently skip the NAT tests)."""
    import pytest

    ok, why = probe()
    if ok:
        return
    env = os.environ if environ is None else environ
    if env.get("PTUNNEL_REQUIRE_NETNS") == "1":
        pytest.fail(f"NAT lab required (PTUNNEL_REQUIRE_NETNS=1) but unavailable: {why}")
    pytest.skip(f"NAT lab unavailable: {why}")


def sh(*cmd: str, check: bool = True, timeout: float = 20.0,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                         env=None if env is None else {**os.environ, **env})
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


@dataclass
class Site:
    index: int
    kind: str
    router: str  # namespace of the NAT router ("" for kind "none")
    host: str  # namespace of the host behind it
    host_ip: str  # the host's own address (10.i.0.2, or public for "none")
    public_ip: str  # the NAT's WAN address (the host's address for "none")


@dataclass
class Proc:
    """A process in a namespace with line-oriented stdout read by a thread (JSON events)."""

    popen: subprocess.Popen[str]
    lines: Queue[str] = field(default_factory=Queue)
    seen: list[str] = field(default_factory=list)

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.popen.stdout is not None
            for line in self.popen.stdout:
                self.lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def expect(self, event: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """Wait for a JSON line with "event" == `event` (and the given fields); return it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event} {match} within {timeout} s; saw {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except Empty:
                continue
            self.seen.append(line)
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if obj.get("event") == event and all(obj.get(k) == v for k, v in match.items()):
                return dict(obj)

    def expect_text(self, text: str, timeout: float = 10.0) -> str:
        """Wait for an output line containing `text` (e.g. a log line)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; saw {self.seen}")

    def events(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Drain every line that arrived (after waiting `wait` seconds)."""
        time.sleep(wait)
        out: list[dict[str, Any]] = []
        while True:
            try:
                line = self.lines.get_nowait()
            except Empty:
                return out
            self.seen.append(line)
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


class Lab:
    def __init__(self, kinds: Sequence[str], prefix: str | None = None) -> None:
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown NAT kind {kind!r}; one of {KINDS}")
        self.prefix = prefix or f"ptl{os.getpid()}x0"
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []
        self.inet = self._ns("inet")
        self.rdv = self._ns("rdv")
        self.sites: list[Site] = []
        try:
            self._build_core()
            for i, kind in enumerate(kinds, start=1):
                self.sites.append(self._build_site(i, kind))
        except BaseException:
            self.close()
            raise

    # --- building --------------------------------------------------------------------------
    def _ns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        self.run(full, "ip", "link", "set", "lo", "up")
        return full

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        sh("ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
           "netns", ns_b)
        self.run(ns_a, "ip", "link", "set", if_a, "up")
        self.run(ns_b, "ip", "link", "set", if_b, "up")

    def _build_core(self) -> None:
        self.run(self.inet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._veth(self.inet, "rdv", self.rdv, "eth0")
        self.run(self.inet, "ip", "addr", "add", f"{INET_RDV_IP}/24", "dev", "rdv")
        self.run(self.rdv, "ip", "addr", "add", f"{RDV_IP}/24", "dev", "eth0")
        self.run(self.rdv, "ip", "route", "add", "default", "via", INET_RDV_IP)

    def _build_site(self, i: int, kind: str) -> Site:
        base = 8 * i  # a /29 of 203.0.113.0/24 per site
        inet_ip, wan_ip = f"203.0.113.{base + 1}", f"203.0.113.{base + 2}"
        host = self._ns(f"h{i}")
        if kind == "none":
            self._veth(self.inet, f"w{i}", host, "eth0")
            self.run(self.inet, "ip", "addr", "add", f"{inet_ip}/29", "dev", f"w{i}")
            self.run(host, "ip", "addr", "add", f"{wan_ip}/29", "dev", "eth0")
            self.run(host, "ip", "route", "add", "default", "via", inet_ip)
            return Site(i, kind, "", host, wan_ip, wan_ip)
        router = self._ns(f"r{i}")
        lan_ip, host_ip = f"10.{i}.0.1", f"10.{i}.0.2"
        self._veth(self.inet, f"w{i}", router, "wan")
        self._veth(router, "lan", host, "eth0")
        self.run(self.inet, "ip", "addr", "add", f"{inet_ip}/29", "dev", f"w{i}")
        self.run(router, "ip", "addr", "add", f"{wan_ip}/29", "dev", "wan")
        self.run(router, "ip", "addr", "add", f"{lan_ip}/24", "dev", "lan")
        self.run(router, "ip", "route", "add", "default", "via", inet_ip)
        self.run(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.run(host, "ip", "addr", "add", f"{host_ip}/24", "dev", "eth0")
        self.run(host, "ip", "route", "add", "default", "via", lan_ip)
        site = Site(i, kind, router, host, host_ip, wan_ip)
        self._nat_rules(site)
        return site

    def _nat_rules(self, site: Site, to_ports: str | None = None) -> None:
        r = site.router
        ipt = ("ip", "netns", "exec", r, "iptables")
        sh(*ipt, "-t", "nat", "-F")
        sh(*ipt, "-F")
        masq = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if to_ports is not None:
            masq += ["-p", "udp", "--to-ports", to_ports]
        if site.kind == "symmetric":
            masq.append("--random-fully")
        if to_ports is not None:
            # --to-ports needs a protocol; other protocols keep the plain rule below.
            sh(*ipt, *masq)
            sh(*ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
        else:
            sh(*ipt, *masq)
        if site.kind == "fullcone":
            sh(*ipt, "-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "udp", "-j", "DNAT",
               "--to-destination", site.host_ip)
            sh(*ipt, "-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "DNAT",
               "-j", "ACCEPT")
        for chain in ("FORWARD", "INPUT"):
            sh(*ipt, "-A", chain, "-i", "wan", "-m", "conntrack", "--ctstate", "NEW", "-j",
               "DROP")

    # --- using -----------------------------------------------------------------------------
    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 20.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout, env=env)

    def spawn(self, ns: str, *cmd: str, env: dict[str, str] | None = None) -> Proc:
        """Start `cmd` in `ns` with pipes; it is killed when the lab closes."""
        popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, **(env or {})},
        )
        proc = Proc(popen)
        proc.start_reader()
        self.procs.append(proc)
        return proc

    def link_bytes(self, ns: str, ifname: str) -> tuple[int, int]:
        """(rx, tx) bytes counted by the kernel on `ifname` inside `ns`."""
        out = sh("ip", "-n", ns, "-s", "-j", "link", "show", ifname).stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])

    def reboot_nat(self, site: Site, new_address: bool = False) -> tuple[int, int]:
        """Forget every mapping and make new ones on other ports, like a router reboot; return
        the range (first, last) the new mappings come from. `new_address`: the ISP gives the
        router another public address as it comes back (`site.public_ip` follows).

        The range is the first block of 1,000 ports from 40000 up that holds no port of the
        mappings before the reboot: a port-preserving NAT keeps a host's port where it is free,
        and a host's ephemeral port lies in 40000-40999 about one time in 28, so a fixed range
        would sometimes give it back its old mapping (a reboot nobody could see)."""
        assert site.router, "a site without NAT cannot reboot"
        # Down while it changes: between the flush of its NAT rules and the new ones a router
        # that forwards would let packets out with their LAN source, and a peer whose NAT
        # still held a mapping toward that LAN address would hear the host from there.
        self.run(site.router, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        listed = self.run(site.router, "conntrack", "-L", check=False).stdout
        used = {int(port) for port in re.findall(r"[sd]port=(\d+)", listed)}
        first = next(start for start in range(40000, 60000, 1000)
                     if not any(start <= port < start + 1000 for port in used))
        if new_address:
            self._renumber_wan(site)
        self._nat_rules(site, f"{first}-{first + 999}")
        self.run(site.router, "conntrack", "-F", check=False)
        self.run(site.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return first, first + 999

    def _renumber_wan(self, site: Site) -> None:
        """Move the router's WAN address to the other free one of its /29 (.2 <-> .3)."""
        base = 8 * site.index
        first, second = f"203.0.113.{base + 2}", f"203.0.113.{base + 3}"
        new = second if site.public_ip == first else first
        # The old address goes first: deleting a primary address deletes its secondaries too.
        self.run(site.router, "ip", "addr", "del", f"{site.public_ip}/29", "dev", "wan")
        self.run(site.router, "ip", "addr", "add", f"{new}/29", "dev", "wan")
        self.run(site.router, "ip", "route", "replace", "default", "via", f"203.0.113.{base + 1}")
        site.public_ip = new

    def transcript(self, tail: int = 60) -> str:
        """The last `tail` output lines of every process, read or not: what a failed test
        prints at teardown (pytest shows it only for failures), so a CI log explains itself."""
        parts = []
        for proc in self.procs:
            proc.events()  # move what is still queued into `seen`
            command = " ".join(str(arg) for arg in proc.popen.args[3:])  # type: ignore[index]
            parts.append(f"--- {command[:200]} (exit code {proc.popen.poll()})")
            parts.extend(proc.seen[-tail:])
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
