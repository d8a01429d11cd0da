"""Forwards added to a running node, as a user types them: a second `connect` or `expose` on a
state directory whose ptunnel runs hands its forward over and returns; `status` lists every
forward with where it came from; `stop NAME|PORT` removes one and `stop` ends the node; ssh's
`-L LPORT:HOST:RPORT` and bind addresses; ping's replies and statistics through a running node."""

from __future__ import annotations

import signal
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.cli import ENV, command, init, join, ptunnel, running, status
from tests.support.loopback import free_port


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextmanager
def echo_server(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP echo service on a free port of `host`."""

    class Server(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True
        allow_reuse_address = True

    with Server((host, 0), _Echo) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield int(server.server_address[1])
        finally:
            server.shutdown()


def echoes(port: int, host: str = "127.0.0.1", payload: bytes = b"hello through ptunnel") -> bool:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                return False
            received += chunk
    return received == payload



def test_connect_and_expose_join_a_running_node(tmp_path: Path, rendezvous: str) -> None:
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    first, second = free_port(), free_port()
    with echo_server() as web, echo_server() as db, \
            running("expose", str(web), "--as", "web", "--home", str(home),
                    "--rendezvous", rendezvous) as exposer:
        exposer.wait_for("exposing")
        # A second expose on the same state directory: handed to the running node, and back.
        done = ptunnel("expose", str(db), "--as", "db", "--home", str(home), timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"exposing 127.0.0.1:{db} as 'db' (public endpoint "), done
        assert "added to the running ptunnel (pid " in done.stderr
        assert "Traceback" not in done.stderr
        with running("connect", "web", "-L", str(first), "--home", str(laptop),
                     "--rendezvous", rendezvous) as connect:
            connect.wait_for("ready:")
            # No PTUNNEL_RENDEZVOUS needed: the running node has its own.
            done = ptunnel("connect", "db", "-L", str(second), "--home", str(laptop), timeout=60)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"ready: db on 127.0.0.1:{second}: direct lan "), done
            assert f"`ptunnel stop {second}` removes it" in done.stderr
            assert echoes(first) and echoes(second)

            with socket.create_connection(("127.0.0.1", second), timeout=10) as held:
                held.sendall(b"x")
                assert held.recv(1) == b"x"
                instance = status(laptop)
                forwards = {f["name"]: f for f in instance["forwards"]}
                assert forwards["web"]["origin"] == "command"
                assert forwards["db"]["origin"] == "added" and forwards["db"]["live"] == 1
                assert forwards["db"]["kind"] == "connect"
                assert forwards["db"]["listen"] == f"127.0.0.1:{second}"
                text = ptunnel("status", "--home", str(laptop)).stdout.splitlines()
                assert f"  connect 'db' on 127.0.0.1:{second}: 1 live connection (added to the " \
                       "running node)" in text, text
            exposed = {f["name"]: f for f in status(home)["forwards"]}
            assert exposed["db"]["kind"] == "expose" and exposed["db"]["origin"] == "added"
            assert exposed["db"]["target"] == f"127.0.0.1:{db}"
            assert exposed["web"]["origin"] == "command"

            # `stop PORT` removes one forward; the others go on.
            done = ptunnel("stop", str(second), "--home", str(laptop))
            assert done.returncode == 0, done.stderr
            assert done.stdout == (f"removed connect 'db' on 127.0.0.1:{second} from the running "
                                   f"ptunnel (pid {connect.proc.pid})\n")
            assert [f["name"] for f in status(laptop)["forwards"]] == ["web"]
            try:
                socket.create_connection(("127.0.0.1", second), timeout=5).close()
                raise AssertionError("the removed forward still listens")
            except ConnectionRefusedError:
                pass
            assert echoes(first)

            done = ptunnel("stop", "nothing-here", "--home", str(laptop))
            assert done.returncode == 1  # the same stop works once that forward is there
            assert done.stderr == (f"ptunnel stop: error: the running ptunnel (pid "
                                   f"{connect.proc.pid}) has no forward named or on port "
                                   "'nothing-here'; `ptunnel status` lists them\n")

            # `up` does not join: its config is a node of its own.
            config = tmp_path / "up.yaml"
            config.write_text(f"rendezvous: {rendezvous}\nconnect:\n  - name: web\n"
                              f"    listen: {free_port()}\n")
            done = ptunnel("up", "-c", str(config), "--home", str(laptop))
            assert done.returncode == 1  # it works once the running one stops
            assert done.stderr == (
                f"ptunnel up: error: another ptunnel (pid {connect.proc.pid}) already runs with "
                f"{laptop}: two nodes with one key would fight over their peers; add tunnels to "
                "it with `ptunnel connect` and `ptunnel expose`, stop it with `ptunnel stop`, or "
                "give this one its own PTUNNEL_HOME\n")

            # `stop NAME` on the exposing side gives the name back.
            done = ptunnel("stop", "db", "--home", str(home))
            assert done.returncode == 0, done.stderr
            assert status(home)["rendezvous"]["names"] == ["web"]

            # `stop` with no argument ends the node, which exits 0.
            done = ptunnel("stop", "--home", str(laptop))
            assert done.returncode == 0, done.stderr
            assert done.stdout == f"stopped ptunnel (pid {connect.proc.pid})\n"
            assert connect.proc.wait(5) == 0
            assert not any("Traceback" in line for line in connect.stderr)
    done = ptunnel("stop", "--home", str(laptop))
    assert done.returncode == 1
    assert done.stderr.startswith(f"ptunnel stop: error: no ptunnel runs with {laptop}; ")


def test_ssh_style_listen_and_bind_addresses(tmp_path: Path, rendezvous: str) -> None:
    """`-L 18096:localhost:18080` is read as `-L 18096`, saying so; `-L 127.0.0.1:PORT` and
    `-L [::1]:PORT` bind there."""
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    ssh_style, v4, v6 = free_port(), free_port(), free_port()
    with echo_server() as web, running("expose", str(web), "--as", "web-a", "--home", str(home),
                                       "--rendezvous", rendezvous) as exposer:
        exposer.wait_for("exposing")
        with running("connect", "web-a", "-L", f"{ssh_style}:localhost:18080", "--home",
                     str(laptop), "--rendezvous", rendezvous) as connect:
            assert connect.wait_for("note:").rstrip("\n") == (
                "note: the exposing node chooses the target (localhost:18080 is not used); "
                f"forwarding local port {ssh_style} to 'web-a'")
            assert connect.wait_for("ready:").startswith(f"ready: web-a on 127.0.0.1:{ssh_style}")
            assert echoes(ssh_style)
            done = ptunnel("connect", "web-a", "-L", f"127.0.0.1:{v4}", "--home", str(laptop))
            assert done.returncode == 0, done.stderr
            assert echoes(v4)
            done = ptunnel("connect", "web-a", "-L", f"[::1]:{v6}", "--home", str(laptop))
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"ready: web-a on [::1]:{v6}: direct "), done.stdout
            assert echoes(v6, host="::1")
    done = ptunnel("connect", "web-a", "-L", "::1:2222", "--home", str(laptop))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "ptunnel connect: error: argument -L/--listen: '::1:2222' is not [BIND:]PORT; an IPv6 "
        "address goes in brackets: [::1]:2222; see `ptunnel connect --help`"]


def test_ping_through_a_running_node_streams_replies_and_ctrl_c_gives_statistics(
        tmp_path: Path, rendezvous: str) -> None:
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    with running("expose", str(free_port()), "--as", "web", "--home", str(home),
                 "--rendezvous", rendezvous) as exposer:
        exposer.wait_for("exposing")
        with running("connect", "web", "-L", str(free_port()), "--home", str(laptop),
                     "--rendezvous", rendezvous) as connect:
            connect.wait_for("ready:")
            pinger = subprocess.Popen(command("ping", "web", "-n", "1000", "-i", "0.2", "--home",
                                              str(laptop)),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=ENV)
            assert pinger.stdout is not None
            # Each reply is a line as it comes, long before the 1000 pings are over.
            started = time.monotonic()
            first = pinger.stdout.readline()
            assert first.startswith("reply from web seq=0 rtt="), first
            assert " ms via direct lan 127.0.0.1:" in first
            assert pinger.stdout.readline().startswith("reply from web seq=1 rtt=")
            assert time.monotonic() - started < 10
            pinger.send_signal(signal.SIGINT)
            out, err = pinger.communicate(timeout=10)
            assert pinger.returncode == 0, err
            lines = out.splitlines()
            assert lines[-2] == "--- web ping statistics ---", lines
            sent = 2 + sum(1 for line in lines if line.startswith("reply from"))
            assert lines[-1].startswith(f"{sent} sent, {sent} received, 0% loss, "
                                        "rtt min/avg/max/mdev = "), lines
            assert "Traceback" not in err
            # The running node stopped pinging when the client went away: it still serves.
            done = ptunnel("ping", "web", "-n", "2", "-i", "0.1", "--home", str(laptop))
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines()[-1].startswith("2 sent, 2 received, 0% loss, rtt ")
