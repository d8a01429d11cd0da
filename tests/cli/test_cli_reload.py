"""`ptunnel reload`: a running `ptunnel up` applies its edited config file, two real daemons on
loopback; what did not change goes on (a connection open through it keeps working)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.cli.test_cli_up import (
    ENV,
    echo_once,
    echo_services,
    home_and_laptop,
    ptunnel,
    up_daemons,
    wait_for_line,
)
from tests.support.loopback import free_port


def reload(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ptunnel("reload", "--home", str(home)), capture_output=True, text=True,
                          env=ENV, timeout=90)


def forwards(home: Path) -> list[str]:
    status = json.loads(subprocess.run(ptunnel("status", "--json", "--home", str(home)),
                                       check=True, capture_output=True, text=True,
                                       env=ENV).stdout)
    return sorted(f"{f['kind']} {f['name']}" for f in status[0]["forwards"])


def echo_eventually(port: int, payload: bytes, within: float = 30) -> bytes:
    """`echo_once` through a connect whose path may still be coming up."""
    deadline = time.monotonic() + within
    while True:
        try:
            reply = echo_once(port, payload)
            if reply == payload or time.monotonic() > deadline:
                return reply
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_reload_applies_the_edited_file_and_leaves_the_rest_running(
        tmp_path: Path, rendezvous: str) -> None:
    home, laptop = home_and_laptop(tmp_path)
    alpha, beta = free_port(), free_port()  # the two services at home
    echoes = echo_services(alpha, beta)
    local_alpha, local_beta = free_port(), free_port()
    head = f"rendezvous: {rendezvous}\n"
    (home / "node.yaml").write_text(f"{head}expose:\n  - port: {alpha}\n    as: alpha\n")
    (laptop / "node.yaml").write_text(
        f"{head}connect:\n  - name: alpha\n    listen: {local_alpha}\n")
    daemons = up_daemons(home, laptop)
    held = None
    try:
        wait_for_line(daemons[0], "exposing")
        wait_for_line(daemons[1], "ready:")
        held = socket.create_connection(("127.0.0.1", local_alpha), timeout=10)
        held.sendall(b"before")
        assert held.recv(100) == b"before"

        # Unchanged: nothing to do, and the node says so.
        done = reload(home)
        assert done.returncode == 0, done.stderr
        assert "0 added, 0 removed, 1 unchanged" in done.stdout

        # A new entry on each side; alpha stays as it was.
        (home / "node.yaml").write_text(
            f"{head}keepalive: 10\nexpose:\n  - port: {alpha}\n    as: alpha\n"
            f"  - port: {beta}\n    as: beta\n")
        (laptop / "node.yaml").write_text(
            f"{head}connect:\n  - name: alpha\n    listen: {local_alpha}\n"
            f"  - name: beta\n    listen: {local_beta}\n")
        done = reload(home)
        assert done.returncode == 0, done.stderr
        assert f"added expose 127.0.0.1:{beta} as 'beta'" in done.stdout.splitlines()
        assert "1 added, 0 removed, 1 unchanged" in done.stdout
        assert "note: keepalive changed in the file" in done.stderr  # a node option: a restart
        done = reload(laptop)
        assert done.returncode == 0, done.stderr
        assert f"added connect 'beta' on 127.0.0.1:{local_beta}" in done.stdout.splitlines()
        assert "1 added, 0 removed, 1 unchanged" in done.stdout
        assert echo_eventually(local_beta, b"b" * 50_000) == b"b" * 50_000
        held.sendall(b"after")  # the connection through the unchanged entry never noticed
        assert held.recv(100) == b"after"

        # A mistake in the file changes nothing.
        (home / "node.yaml").write_text(f"{head}expose:\n  - port: eighty\n    as: alpha\n")
        done = reload(home)
        assert done.returncode == 2, done
        assert done.stderr.startswith(f"ptunnel reload: error: {home / 'node.yaml'}:3:"), done
        assert forwards(home) == ["expose alpha", "expose beta"]

        # An entry gone: its forward goes, the other stays.
        (home / "node.yaml").write_text(f"{head}expose:\n  - port: {beta}\n    as: beta\n")
        done = reload(home)
        assert done.returncode == 0, done.stderr
        assert f"removed expose 127.0.0.1:{alpha} as 'alpha'" in done.stdout.splitlines()
        assert forwards(home) == ["expose beta"]
        assert echo_eventually(local_beta, b"still") == b"still"
    finally:
        if held is not None:
            held.close()
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            daemon.wait(timeout=15)
        for echo in echoes:
            echo.terminate()


def test_reload_needs_a_running_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run(ptunnel("init", "--home", str(home)), check=True, capture_output=True)
    done = reload(home)
    assert done.returncode == 1
    assert done.stderr == (f"ptunnel reload: error: no ptunnel runs with {home}; start it with "
                           "`ptunnel up` (with --home or PTUNNEL_HOME for another state "
                           "directory)\n")
