"""Names are case-insensitive, like DNS labels, and a name that cannot be one is refused with
the rule before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import init, join, ptunnel, running, silent_rendezvous
from tests.support.loopback import free_port

RULE = "use 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"


@pytest.mark.parametrize("name", ["Web A", "wéb", "w" * 64])
@pytest.mark.parametrize("command", ["connect", "expose", "ping"])
def test_a_bad_name_is_refused_before_anything_is_sent(
        tmp_path: Path, command: str, name: str) -> None:
    home = init(tmp_path / "a")
    with silent_rendezvous() as server:
        argv = {"connect": ["connect", name, "-L", str(free_port())],
                "expose": ["expose", "8080", "--as", name],
                "ping": ["ping", name]}[command]
        done = ptunnel(*argv, "--home", str(home), "--rendezvous", server.address, timeout=20)
        assert server.received_nothing()
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"ptunnel {command}: error: ")
    assert f"{name!r} cannot be a name: {RULE}" in line


def test_a_bad_name_in_the_config_names_file_and_line(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    config = home / "node.yaml"
    config.write_text("rendezvous: 127.0.0.1:9\nexpose:\n  - port: 22\n    as: Echo D\n")
    done = ptunnel("up", "--home", str(home))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"ptunnel up: error: {config}:4: 'as' is 'Echo D'; expected a name: "
        "1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"]


def test_names_in_capitals_reach_the_same_service(tmp_path: Path, rendezvous: str) -> None:
    """`expose --as Web-A`, `connect WEB-a`, `ping web-A`: one name, 'web-a'."""
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    with running("expose", str(free_port()), "--as", "Web-A", "--home", str(home),
                 "--rendezvous", rendezvous) as exposer:
        assert "as 'web-a'" in exposer.wait_for("exposing")
        with running("connect", "WEB-a", "-L", str(free_port()), "--home", str(laptop),
                     "--rendezvous", rendezvous) as connect:
            assert "ready: web-a on 127.0.0.1:" in connect.wait_for("ready:")
            # `ping` asks the running connect over its control socket
            done = ptunnel("ping", "web-A", "-n", "1", "--home", str(laptop))
            assert done.returncode == 0, done.stderr
            assert "1 sent, 1 received, 0% loss, rtt min/avg/max/mdev = " in done.stdout


def test_an_unknown_name_in_capitals_is_a_one_line_error(tmp_path: Path, rendezvous: str) -> None:
    """The issue's `ptunnel ping SSH-Home` with nothing exposed: no traceback."""
    done = ptunnel("ping", "SSH-Home", "--home", str(init(tmp_path / "a")),
                   "--rendezvous", rendezvous)
    assert done.returncode == 1  # a failure of the run: the name may come up later
    assert done.stderr.splitlines()[-1] == (
        "ptunnel ping: error: no node named 'ssh-home' in your network; is `ptunnel expose` "
        "running there?")
    assert "Traceback" not in done.stderr
