"""Running ptunnel as users do inside the NAT lab: a rendezvous, exposes and connects as processes
in network namespaces, the lab tool's services, and end-to-end checks by SHA-256."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.netns import RDV_IP, Lab, Proc, Site
from tests.conftest import LabFactory

ROOT = Path(__file__).resolve().parents[2]
LABTOOL = str(ROOT / "lab" / "tool.py")
ENV = {"PYTHONPATH": str(ROOT)}
RENDEZVOUS = f"{RDV_IP}:7000"
SERVICE_PORT = 9000
LOCAL_PORT = 2222
MiB = 1024 * 1024


def ptunnel(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tunnel", *argv]


@dataclass
class Tunnels:
    """A lab plus the ptunnel homes of one network (and of an outsider network)."""

    lab: Lab
    tmp: Path
    rendezvous: Proc | None = None
    exposers: list[Proc] = field(default_factory=list)  # every expose process, in start order

    def home(self, name: str, network: str = "home") -> Path:
        home = self.tmp / name
        if not home.exists():
            founder = self.tmp / f"founder-{network}"
            if not founder.exists():
                subprocess.run(ptunnel("init", "--home", str(founder)), check=True,
                               capture_output=True)
            code = subprocess.run(ptunnel("invite", "--home", str(founder)), check=True,
                                  capture_output=True, text=True).stdout.strip()
            subprocess.run(ptunnel("join", code, "--home", str(home)), check=True,
                           capture_output=True)
        return home

    def start_rendezvous(self, *extra: str) -> Proc:
        self.rendezvous = self.lab.spawn(
            self.lab.rdv, *ptunnel("rendezvous", "--listen", RENDEZVOUS, "--db",
                                   str(self.tmp / "rendezvous.db"), "--home",
                                   str(self.tmp / "rdv-home"), *extra), env=ENV)
        self.rendezvous.expect_text("rendezvous listening", timeout=15)
        return self.rendezvous

    def service(self, site: Site, *args: str) -> Proc:
        proc = self.lab.spawn(site.host, sys.executable, LABTOOL, *args, env=ENV)
        proc.expect_text("listening")
        return proc

    def expose(self, site: Site, name: str, *extra: str, home: str = "exposer",
               network: str = "home") -> Proc:
        proc = self.lab.spawn(site.host, *ptunnel(
            "expose", str(SERVICE_PORT), "--as", name, "--home",
            str(self.home(home, network)), "--rendezvous", RENDEZVOUS, *extra), env=ENV)
        proc.expect_text("exposing", timeout=20)
        self.exposers.append(proc)
        return proc

    def connect(self, site: Site, name: str, *extra: str, home: str = "connector",
                network: str = "home", port: int = LOCAL_PORT, timeout: float = 30) -> Proc:
        return self.lab.spawn(site.host, *ptunnel(
            "connect", name, "-L", str(port), "--home", str(self.home(home, network)),
            "--rendezvous", RENDEZVOUS, "--timeout", str(timeout), *extra), env=ENV)

    def connector_status(self, site: Site) -> list[dict[str, Any]]:
        """`ptunnel status --json` of the connecting node at `site` (one entry per node)."""
        out = self.lab.run(site.host, *ptunnel("status", "--json", "--home",
                                               str(self.home("connector"))))
        status: list[dict[str, Any]] = json.loads(out.stdout)
        return status

    def tool(self, site: Site, *args: str, timeout: float = 120) -> dict[str, object]:
        out = self.lab.run(site.host, sys.executable, LABTOOL, *args, timeout=timeout)
        result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def rdv_bytes(self) -> int:
        rx, tx = self.lab.link_bytes(self.lab.rdv, "eth0")
        return rx + tx


def upload(tunnels: Tunnels, site: Site, size: int, port: int = LOCAL_PORT) -> float:
    """Send `size` bytes through the tunnel to the sha-sink; assert they arrived intact."""
    result = tunnels.tool(site, "upload", str(port), str(size))
    digest, count = str(result["reply"]).split()
    assert (digest, int(count)) == (result["sha256"], size), result
    return float(str(result["seconds"]))


def ready_line(proc: Proc, timeout: float = 30) -> str:
    return proc.expect_text("ready:", timeout=timeout)


def exposed(natlab: LabFactory, tmp_path: Path, kinds: list[str], name: str = "box",
            sink: bool = True) -> tuple[Tunnels, Site, Site]:
    """A lab with a rendezvous, a sha-sink service at site 1 exposed as `name`, and site 2."""
    lab = natlab(kinds)
    tunnels = Tunnels(lab, tmp_path)
    tunnels.start_rendezvous()
    home_site, other = lab.sites[0], lab.sites[1]
    if sink:
        tunnels.service(home_site, "sha-sink", str(SERVICE_PORT))
    tunnels.expose(home_site, name)
    return tunnels, home_site, other
