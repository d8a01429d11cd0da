"""`make demo`: the whole mission on one machine, measured, then a clean exit.

Without root everything runs on 127.0.0.1: a rendezvous with its SQLite database, a TCP echo
service, `ptunnel expose` in front of it and `ptunnel connect` to it, each a separate process as
users run them, each with its own state directory (two machines of one network). A few MiB go
through the tunnel and back; the report says what was measured: the path, the round trip time,
the throughput and whether the SHA-256 of what came back matches what was sent.

`make demo NAT=1` (root) does the same across two NAT routers built from network namespaces
(`tests/natlab.py`), and also shows by the kernel's byte counters that the data went direct.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lab.netns import RDV_IP, Lab, netns_available

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = 8 * 1024 * 1024  # bytes each way
SERVICE_PORT = 9000
LOCAL_PORT = 2222


def step(text: str) -> None:
    print(f"demo: {text}", flush=True)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ptunnel(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tunnel", *argv]


def run(argv: Sequence[str]) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(argv[2:])}` failed: {done.stderr.strip()}")
    return done.stdout


class Background:
    """A long-running process whose stdout lines are collected by a thread."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.lines: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors),
                         daemon=True).start()

    @staticmethod
    def _pump(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float, source: str = "stdout") -> str:
        lines = self.lines if source == "stdout" else self.errors
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in lines:
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        detail = (self.errors or self.lines or ["(no output)"])[-1]
        raise SystemExit(f"demo: waited for {text!r} in vain: {detail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def echo_server(port: int) -> socket.socket:
    """A TCP echo service in a thread: reads to EOF, echoes, then closes its write side."""
    server = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(262144):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=serve, daemon=True).start()
    return server


def measure(port: int,
            wrap: Callable[[Sequence[str]], list[str]] | None = None) -> dict[str, float]:
    """Round trips and an echo of PAYLOAD bytes through the local end of the tunnel."""
    code = (
        "import hashlib, json, os, socket, threading, time\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
        "rtts = []\n"
        "for _ in range(200):\n"
        "    t = time.perf_counter(); s.sendall(b'x' * 64); got = b''\n"
        "    while len(got) < 64: got += s.recv(64 - len(got))\n"
        "    rtts.append(time.perf_counter() - t)\n"
        f"payload = os.urandom({PAYLOAD})\n"
        "t = time.perf_counter()\n"
        "def send():\n"
        "    s.sendall(payload); s.shutdown(socket.SHUT_WR)\n"
        "threading.Thread(target=send).start()\n"
        "h = hashlib.sha256(); n = 0\n"
        "while data := s.recv(1 << 20):\n"
        "    h.update(data); n += len(data)\n"
        "elapsed = time.perf_counter() - t\n"
        "rtts.sort()\n"
        "print(json.dumps({'rtt_ms': rtts[len(rtts) // 2] * 1e3, 'seconds': elapsed,\n"
        "    'match': h.hexdigest() == hashlib.sha256(payload).hexdigest()}))\n"
    )
    argv = [sys.executable, "-c", code]
    out = run(wrap(argv) if wrap else argv)
    import json

    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def report(path_line: str, result: dict[str, float]) -> bool:
    mb_per_s = 2 * PAYLOAD / result["seconds"] / 1e6
    step(f"path:       {path_line.split(': ', 2)[-1]}")
    step(f"round trip: {result['rtt_ms']:.2f} ms median of 200 64-byte echoes through the tunnel")
    step(f"throughput: {mb_per_s:.1f} MB/s ({PAYLOAD // (1024 * 1024)} MiB each way, "
         f"{result['seconds']:.2f} s)")
    step(f"integrity:  SHA-256 of the echo {'matches' if result['match'] else 'DOES NOT match'}")
    return bool(result["match"])


def loopback_demo(tmp: Path) -> int:
    rdv_port = free_port(socket.SOCK_DGRAM)
    while True:  # the rendezvous also needs PORT+1 (netcheck)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", rdv_port + 1))
            break
        except OSError:
            rdv_port = free_port(socket.SOCK_DGRAM)
    rendezvous = f"127.0.0.1:{rdv_port}"
    home, laptop = tmp / "home", tmp / "laptop"
    run(ptunnel("init", "--home", str(home)))
    run(ptunnel("join", run(ptunnel("invite", "--home", str(home))).strip(),
                "--home", str(laptop)))
    step("two machines (state directories) joined one network with `init`, `invite`, `join`")
    service_port, local_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    service = echo_server(service_port)
    procs: list[Background] = []
    try:
        started = time.monotonic()
        server = Background(ptunnel("rendezvous", "--listen", rendezvous, "--db",
                                    str(tmp / "rendezvous.db"), "--home", str(tmp / "rdv")))
        procs.append(server)
        server.wait_for("rendezvous listening", 15, source="stderr")
        step(f"rendezvous listening on {rendezvous} (SQLite {tmp / 'rendezvous.db'})")
        exposer = Background(ptunnel("expose", str(service_port), "--as", "echo", "--home",
                                     str(home), "--rendezvous", rendezvous))
        procs.append(exposer)
        step(exposer.wait_for("exposing", 20))
        connector = Background(ptunnel("connect", "echo", "-L", str(local_port), "--home",
                                       str(laptop), "--rendezvous", rendezvous))
        procs.append(connector)
        line = connector.wait_for("ready:", 30)
        step(f"{line}  ({time.monotonic() - started:.2f} s after starting the rendezvous)")
        ok = report(line, measure(local_port))
        status = run(ptunnel("status", "--home", str(laptop))).strip().splitlines()
        for row in status:
            step(f"status: {row.strip()}")
        return 0 if ok else 1
    finally:
        for proc in reversed(procs):
            proc.stop()
        service.close()


def nat_demo(tmp: Path) -> int:

    ok, why = netns_available()
    if not ok:
        raise SystemExit(f"demo: the NAT demo needs network namespaces: {why}; run as root")
    rendezvous = f"{RDV_IP}:7000"
    home, laptop = tmp / "home", tmp / "laptop"
    run(ptunnel("init", "--home", str(home)))
    run(ptunnel("join", run(ptunnel("invite", "--home", str(home))).strip(),
                "--home", str(laptop)))
    with Lab(["cone", "cone"], prefix=f"ptdemo{os.getpid() % 10000}") as lab:
        home_site, laptop_site = lab.sites
        step(f"NAT lab: home {home_site.host_ip} behind {home_site.public_ip}, laptop "
             f"{laptop_site.host_ip} behind {laptop_site.public_ip}, rendezvous {rendezvous}")
        env = {"PYTHONPATH": str(ROOT)}
        server = lab.spawn(lab.rdv, *ptunnel("rendezvous", "--listen", rendezvous, "--db",
                                             str(tmp / "rendezvous.db"), "--home",
                                             str(tmp / "rdv")), env=env)
        server.expect_text("rendezvous listening", timeout=15)
        lab.spawn(home_site.host, sys.executable, str(ROOT / "lab" / "tool.py"), "echo",
                  str(SERVICE_PORT), env=env).expect_text("listening")
        step(lab.spawn(home_site.host, *ptunnel(
            "expose", str(SERVICE_PORT), "--as", "echo", "--home", str(home), "--rendezvous",
            rendezvous), env=env).expect_text("Ctrl-C to stop", timeout=20))
        line = lab.spawn(laptop_site.host, *ptunnel(
            "connect", "echo", "-L", str(LOCAL_PORT), "--home", str(laptop), "--rendezvous",
            rendezvous), env=env).expect_text("ready:", timeout=30)
        step(line)
        before = sum(lab.link_bytes(lab.rdv, "eth0"))
        ok = report(line, measure(LOCAL_PORT, lambda argv: ["ip", "netns", "exec",
                                                            laptop_site.host, *argv]))
        relayed = sum(lab.link_bytes(lab.rdv, "eth0")) - before
        step(f"bytes through the rendezvous host during the transfer: {relayed} "
             f"({'direct path' if relayed < PAYLOAD // 8 else 'relayed'})")
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nat", action="store_true", help="run through the NAT lab (root)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ptunnel-demo-") as tmp:
        os.chmod(tmp, 0o700)
        return nat_demo(Path(tmp)) if args.nat else loopback_demo(Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
