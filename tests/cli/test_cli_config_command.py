"""`ptunnel config check|example`, `up`'s words for a missing file and a busy port, and
`init --rendezvous`, each tried the way a user types it."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.cli import init, ptunnel, silent_rendezvous
from tunnel.cli.samples import CONFIG_SAMPLES, read_sample

DATA = Path(__file__).resolve().parents[2] / "tunnel" / "data"

# Five mistakes on five lines; `up` stops at the first, `config check` lists them all.
BAD = """\
keepalive: soon
bogus: 1
expose:
  - port: 22
    as: web
  - port: 80
    as: WEB
connect:
  - name: db
"""


def test_check_lists_every_mistake_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(BAD)
    done = ptunnel("config", "check", "-c", str(path))
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [
        f"{path}:1: 'keepalive' is 'soon'; expected a number",
        f"{path}:2: unknown key 'bogus' in the config file; expected one of: rendezvous, "
        "rendezvous_key, log_level, log_format, keepalive, direct_only, congestion, allow, "
        "expose, connect",
        f"{path}:6: 'as: web' is already in the expose entry of line 4; each expose entry "
        "needs its own 'as'",
        f"{path}:9: connect entry lacks required key 'listen'",
    ]
    assert done.stderr == f"ptunnel config: error: 4 problems in {path}; fix the lines above\n"


def test_up_reports_the_first_mistake_and_how_many_more(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(BAD)
    done = ptunnel("up", "-c", str(path), "--home", str(init(tmp_path / "a")))
    assert done.returncode == 2
    assert done.stderr == (
        f"ptunnel up: error: {path}:1: 'keepalive' is 'soon'; expected a number (and 3 more "
        f"problems: `ptunnel config check -c {path}` lists them all)\n")


def test_check_a_good_file_and_the_default_location(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    (home / "node.yaml").write_text("rendezvous: 192.0.2.1:7000\nexpose:\n  - port: 22\n"
                                    "    as: ssh\n")
    done = ptunnel("config", "check", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{home}/node.yaml: ok (1 expose entry, 0 connect entries)\n"


def test_check_a_rendezvous_file(tmp_path: Path) -> None:
    path = tmp_path / "rendezvous.yaml"
    path.write_text("listen: 0.0.0.0:7000\nrelay: maybe\n")
    done = ptunnel("config", "check", "rendezvous", "-c", str(path))
    assert done.returncode == 2
    assert done.stdout == f"{path}:2: 'relay' is 'maybe'; expected true or false\n"


def test_check_a_missing_file_says_how_to_start_one(tmp_path: Path) -> None:
    done = ptunnel("config", "check", "--home", str(tmp_path / "a"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"ptunnel config: error: {tmp_path}/a/node.yaml does not exist; start "
                           f"one with `ptunnel config example node > {tmp_path}/a/node.yaml`\n")


def test_examples_print_the_shipped_samples_which_check_clean(tmp_path: Path) -> None:
    for kind, filename in CONFIG_SAMPLES.items():
        done = ptunnel("config", "example", kind)
        assert done.returncode == 0, done.stderr
        assert done.stdout == (DATA / filename).read_text() == read_sample(filename)
        (tmp_path / filename).write_text(done.stdout)
        checked = ptunnel("config", "check", kind, "-c", str(tmp_path / filename))
        assert checked.returncode == 0, checked.stdout
    assert ptunnel("config", "example").stdout == (DATA / "node.yaml").read_text()


def test_up_without_node_yaml_says_it_does_not_exist(tmp_path: Path) -> None:
    """It used to say the file "lists no expose: or connect: entries"."""
    home = init(tmp_path / "a")
    done = ptunnel("up", "--home", str(home))
    assert done.returncode == 2
    assert done.stderr == (
        f"ptunnel up: error: {home}/node.yaml does not exist; start one with `ptunnel config "
        f"example node > {home}/node.yaml` and list what to expose and connect in it (or pass "
        "-c FILE)\n")


def test_up_names_the_yaml_key_of_a_busy_port(tmp_path: Path) -> None:
    """It used to say "pick another with -L PORT", a flag a config file does not have."""
    home = init(tmp_path / "a")
    with socket.socket() as busy, silent_rendezvous() as server:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (home / "node.yaml").write_text(
            f"rendezvous: {server.address}\nconnect:\n  - name: db\n    listen: {port}\n")
        done = ptunnel("up", "--home", str(home))
    assert done.returncode == 1, done.stderr  # the file is right; the port is taken for now
    assert done.stderr.splitlines()[-1] == (
        f"ptunnel up: error: local port 127.0.0.1:{port} is already in use; change `listen:` "
        f"of the connect entry 'db' in {home}/node.yaml")
    assert "-L" not in done.stderr


def test_init_rendezvous_is_saved_and_used(tmp_path: Path, rendezvous: str) -> None:
    home = tmp_path / "a"
    done = ptunnel("init", "--rendezvous", rendezvous, "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert f"rendezvous {rendezvous} saved in {home}/node.yaml" in done.stdout
    assert f"\nrendezvous: {rendezvous}\n" in (home / "node.yaml").read_text()
    # No --rendezvous and no PTUNNEL_RENDEZVOUS (tests.support.cli removes it): node.yaml's.
    listed = ptunnel("list", "--home", str(home))
    assert listed.returncode == 0, listed.stderr
    assert ptunnel("config", "check", "--home", str(home)).returncode == 0


def test_init_rendezvous_on_a_member_keeps_the_network_and_the_file(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    network = ptunnel("id", "--home", str(home)).stdout
    (home / "node.yaml").write_text("# mine\nrendezvous: 192.0.2.1:7000  # old\nkeepalive: 10\n")
    done = ptunnel("init", "--rendezvous", "[2001:db8::1]:7000", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("kept network ")
    assert ptunnel("id", "--home", str(home)).stdout == network
    assert (home / "node.yaml").read_text() == (
        '# mine\nrendezvous: "[2001:db8::1]:7000"\nkeepalive: 10\n')


def test_init_rendezvous_refuses_a_bad_address(tmp_path: Path) -> None:
    done = ptunnel("init", "--rendezvous", "nowhere", "--home", str(tmp_path / "a"))
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
    assert not (tmp_path / "a").exists()
