"""`ptunnel up -c FILE`: every expose and connect of a config file in one daemon process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def ptunnel(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tunnel", *argv]


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no {text!r} from {proc.args!r}")


def home_and_laptop(tmp_path: Path) -> tuple[Path, Path]:
    """The state directories of two nodes of one network: `home` made it, `laptop` joined."""
    home, laptop = tmp_path / "home", tmp_path / "laptop"
    subprocess.run(ptunnel("init", "--home", str(home)), check=True, capture_output=True)
    code = subprocess.run(ptunnel("invite", "--home", str(home)), check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(ptunnel("join", code, "--home", str(laptop)), check=True, capture_output=True)
    return home, laptop


def echo_services(*ports: int) -> list[subprocess.Popen[str]]:
    """TCP echo services (the lab tool's) on 127.0.0.1, listening when this returns."""
    echoes = [subprocess.Popen([sys.executable, str(ROOT / "lab" / "tool.py"), "echo", str(port)],
                               stdout=subprocess.PIPE, text=True) for port in ports]
    for echo in echoes:
        wait_for_line(echo, "listening")
    return echoes


def up_daemons(*homes: Path) -> list[subprocess.Popen[str]]:
    """`ptunnel up` for each state directory (its node.yaml), stdout piped for its lines."""
    return [subprocess.Popen(ptunnel("up", "--home", str(home)), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=ENV) for home in homes]


def echo_once(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while data := sock.recv(65536):
            reply += data
    return reply


def test_up_runs_the_config_and_reports_status(tmp_path: Path, rendezvous: str) -> None:
    home, laptop = tmp_path / "home", tmp_path / "laptop"
    subprocess.run(ptunnel("init", "--home", str(home)), check=True, capture_output=True)
    code = subprocess.run(ptunnel("invite", "--home", str(home)), check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(ptunnel("join", code, "--home", str(laptop)), check=True, capture_output=True)
    echo = subprocess.Popen([sys.executable, str(ROOT / "lab" / "tool.py"), "echo",
                             str(service := free_port())], stdout=subprocess.PIPE, text=True)
    wait_for_line(echo, "listening")
    local = free_port()
    (home / "node.yaml").write_text(
        f"rendezvous: {rendezvous}\nexpose:\n  - port: {service}\n    as: echo\n")
    (laptop / "node.yaml").write_text(
        f"rendezvous: {rendezvous}\nconnect:\n  - name: echo\n    listen: {local}\n")
    daemons = [subprocess.Popen(ptunnel("up", "--home", str(h)), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=ENV)
               for h in (home, laptop)]
    try:
        assert "exposing" in wait_for_line(daemons[0], "exposing")
        assert "echo on 127.0.0.1:" in wait_for_line(daemons[1], "ready:")
        assert echo_once(local, b"x" * 100_000) == b"x" * 100_000
        status = json.loads(subprocess.run(ptunnel("status", "--json", "--home", str(laptop)),
                                           check=True, capture_output=True, text=True).stdout)
        assert status[0]["connections"][0]["name"] == "echo"
        assert status[0]["connections"][0]["bytes_sent"] >= 100_000
    finally:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        codes = [daemon.wait(timeout=15) for daemon in daemons]
        echo.terminate()
    assert codes == [143, 143]  # stopped by SIGTERM: 128 + 15, as the README says


def test_up_without_entries_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run(ptunnel("init", "--home", str(home)), check=True, capture_output=True)
    (home / "node.yaml").write_text("rendezvous: 127.0.0.1:7000\n")
    done = subprocess.run(ptunnel("up", "--home", str(home)), capture_output=True, text=True,
                          env=ENV)
    assert done.returncode == 2
    assert "lists no `expose:` or `connect:` entries" in done.stderr
    assert done.stderr.count("\n") == 1
