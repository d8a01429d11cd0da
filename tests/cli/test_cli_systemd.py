"""systemd: READY=1 and STATUS= reach a real $NOTIFY_SOCKET (path and abstract), from a real
`ptunnel up`; `ptunnel service print` writes a unit with this machine's paths that
`systemd-analyze verify` accepts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cli import ENV, Background, init, ptunnel
from tunnel.cli import sdnotify
from tunnel.cli.commands.service import systemd_quote, unit_text


@contextmanager
def notify_socket(address: str | bytes) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
        sock.settimeout(20)
        yield sock
    finally:
        sock.close()


def test_notify_to_a_path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with notify_socket(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.ready("exposing web\nand more")
        # One datagram; a newline inside a value does not start another assignment.
        assert sock.recv(4096) == b"READY=1\nSTATUS=exposing web and more"


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ptunnel-test-{os.getpid()}"
    with notify_socket(b"\0" + name.encode()) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.status("registering 'web'")
        assert sock.recv(4096) == b"STATUS=registering 'web'"


def test_no_notify_socket_no_notification(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.ready("x")
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # a kind we do not speak
    assert not sdnotify.ready("x")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not sdnotify.ready("x")  # logged, never raised


def test_up_notifies_ready_once_its_names_are_registered(tmp_path: Path,
                                                         rendezvous: str) -> None:
    home = init(tmp_path / "a")
    (home / "node.yaml").write_text(f"rendezvous: {rendezvous}\nexpose:\n  - port: 9\n"
                                    "    as: web\n")
    path = str(tmp_path / "notify")
    with notify_socket(path) as sock:
        command = Background("up", "--home", str(home), env={"NOTIFY_SOCKET": path})
        try:
            messages = [sock.recv(4096).decode() for _ in range(2)]
            command.wait_for("exposing 127.0.0.1:9 as 'web'")
        finally:
            stopped = command.stop()
    assert messages[0] == f"STATUS=registering 'web' at {rendezvous}"
    assert messages[1] == "READY=1\nSTATUS=exposing web"
    assert stopped.code == 130  # SIGINT, as Ctrl-C


# --- the unit -----------------------------------------------------------------------------

def exec_start(unit: str, key: str = "ExecStart") -> str:
    return next(line for line in unit.splitlines() if line.startswith(f"{key}="))


def test_service_print_as_python_m_tunnel(tmp_path: Path) -> None:
    done = ptunnel("service", "print")
    assert done.returncode == 0, done.stderr
    assert exec_start(done.stdout) == (
        f"ExecStart={Path(sys.executable).absolute()} -m tunnel up -c /etc/ptunnel/node.yaml")
    assert exec_start(done.stdout, "ExecReload") == (
        f"ExecReload={Path(sys.executable).absolute()} -m tunnel reload")
    for line in ("Type=notify", "DynamicUser=yes", "StateDirectory=ptunnel",
                 "Environment=PTUNNEL_HOME=%S/ptunnel", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "RestartPreventExitStatus=2", "SuccessExitStatus=143"):
        assert line in done.stdout.splitlines(), line
    settings = [line for line in done.stdout.splitlines() if not line.startswith("#")]
    assert not any(line.startswith("User=") or "/usr/local/bin" in line for line in settings)


def test_service_print_as_the_ptunnel_script_with_a_config(tmp_path: Path) -> None:
    """As installed: ExecStart is the script the user ran, -c the file named, absolute."""
    bin_dir = tmp_path / "opt bin"  # a space, which systemd needs quoted
    bin_dir.mkdir()
    script = bin_dir / "ptunnel"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom tunnel.cli.main import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    done = subprocess.run([str(script), "service", "print", "-c", "conf/node.yaml"],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert exec_start(done.stdout) == (
        f'ExecStart="{script}" up -c {tmp_path}/conf/node.yaml')
    assert exec_start(done.stdout, "ExecReload") == f'ExecReload="{script}" reload'


def test_a_ptunnel_below_home_gets_protect_home_read_only() -> None:
    unit = unit_text(["/home/ann/.local/bin/ptunnel"], Path("/etc/ptunnel/node.yaml"))
    assert "ProtectHome=read-only" in unit.splitlines()
    assert "ProtectHome=yes" not in unit


def test_systemd_quoting() -> None:
    assert systemd_quote("/usr/bin/ptunnel") == "/usr/bin/ptunnel"
    assert systemd_quote("/opt/50%/$HOME") == "/opt/50%%/$$HOME"
    assert systemd_quote('/a b/"c"') == '"/a b/\\"c\\""'


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (.ci/run installs systemd)")
def test_systemd_analyze_verifies_the_printed_unit(tmp_path: Path) -> None:
    unit = tmp_path / "ptunnel.service"
    unit.write_text(ptunnel("service", "print").stdout)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
