"""The README's two-machine quick start, exactly as a user types it, on loopback: `ptunnel
rendezvous` on the server; `init --rendezvous` and `invite` at home; `join -` on the laptop;
then `expose` at home and `connect` on the laptop. Two state directories stand for the two
machines; no PTUNNEL_RENDEZVOUS (or any PTUNNEL_ variable) is set, and after `init` no command
is told where the server is: the join code carries it, and its key."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from tests.cli.test_cli_live import echo_server
from tests.support.cli import ENV, Background, command, ptunnel
from tests.support.loopback import free_port, free_udp_pair

PAYLOAD = os.urandom(256 * 1024)


def round_trip(port: int, payload: bytes) -> bytes:
    """Send `payload` to the local port and read back as many bytes (the target echoes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(payload)
        received = bytearray()
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return bytes(received)


def test_the_readme_quick_start_on_two_state_directories(tmp_path: Path) -> None:
    # No setting comes from the environment. Two variables steer the test run, not ptunnel's
    # settings: PTUNNEL_PURE picks the build (`make unit-pure`), PTUNNEL_REQUIRE_NETNS is CI's.
    steering = {"PTUNNEL_PURE", "PTUNNEL_REQUIRE_NETNS"}
    assert not [name for name in ENV if name.startswith("PTUNNEL_") and name not in steering]
    server_dir, home, laptop = tmp_path / "vps", tmp_path / "home", tmp_path / "laptop"
    address = f"127.0.0.1:{free_udp_pair()}"
    server = Background("rendezvous", "--listen", address, "--home", str(server_dir))
    try:
        # vps$ ptunnel rendezvous --listen ...: prints its key, which invite's note must match.
        shown = server.wait_for("; nodes pin it on first contact")
        server_fingerprint = re.search(r"\((SHA256:[^)]+)\)", shown)
        assert server_fingerprint is not None, shown
        server.wait_for("listening")

        # home$ ptunnel init --rendezvous HOST:PORT; ptunnel invite
        done = ptunnel("init", "--rendezvous", address, "--home", str(home))
        assert done.returncode == 0, done.stderr
        assert f"rendezvous {address} saved in {home}/node.yaml" in done.stdout
        done = ptunnel("invite", "--home", str(home))
        assert done.returncode == 0, done.stderr
        code = done.stdout.strip()
        assert code.startswith("ptn2-") and done.stdout.count("\n") == 1, done.stdout
        assert (f"note: pinned the key of the rendezvous at {address}: "
                f"{server_fingerprint.group(1)} (first contact)") in done.stderr

        # laptop$ ptunnel join -   (the code pasted on standard input)
        done = subprocess.run(command("join", "-", "--home", str(laptop)), input=code + "\n",
                              capture_output=True, text=True, timeout=60, env=ENV)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[1] == (
            f"rendezvous {address} (key {server_fingerprint.group(1)}) remembered")

        local = free_port()
        with echo_server() as target:
            # home$ ptunnel expose PORT --as NAME
            exposer = Background("expose", str(target), "--as", "echo-home", "--home", str(home))
            connector: Background | None = None
            try:
                assert exposer.wait_for("(public endpoint").startswith(
                    f"exposing 127.0.0.1:{target} as 'echo-home' (public endpoint ")
                # laptop$ ptunnel connect NAME -L PORT
                connector = Background("connect", "echo-home", "-L", str(local),
                                       "--home", str(laptop))
                ready = connector.wait_for("ready:", timeout=30)
                assert ready.startswith(f"ready: echo-home on 127.0.0.1:{local}: direct "), ready
                # Bytes both ways through the local port: the echo comes back whole.
                assert round_trip(local, PAYLOAD) == PAYLOAD
                assert round_trip(local, b"and again") == b"and again"
                stopped = [connector.stop(signal.SIGINT), exposer.stop(signal.SIGINT)]
            finally:
                if connector is not None:
                    connector.kill()
                exposer.kill()
        assert [s.code for s in stopped] == [130, 130]
        for lines in [*(s.stderr for s in stopped), server.stderr]:
            assert not any("Traceback" in line for line in lines)
    finally:
        server.kill()
