"""Every command's main failure, as a user meets it, exits with the README's status: 1 when the
same command, run again unchanged, could work (a server that does not answer, a name nobody
exposes, a port or name somebody else holds, another ptunnel running), 2 for a mistake to fix
first (a flag, a file, not joined, no rendezvous given). Each is one line on stderr.

One world serves every case: a rendezvous, one that refuses our network (`--networks`), a UDP
port where nothing answers, a home node that runs `expose web` and a laptop of its network."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import Background, SilentRendezvous, init, join, ptunnel
from tests.support.loopback import free_port, free_udp_pair


@dataclass
class World:
    tmp: Path
    server: str  # HOST:PORT of a rendezvous that serves every network
    refusing: str  # HOST:PORT of one that serves another network only
    silent: str  # HOST:PORT where nothing answers
    home: Path  # runs `expose web`
    laptop: Path  # a member that runs nothing
    lonely: Path  # a network of its own, no rendezvous configured
    busy_port: int  # a local TCP port something listens on


def _server(tmp: Path, name: str, *flags: str) -> tuple[Background, str]:
    address = f"127.0.0.1:{free_udp_pair()}"
    server = Background("rendezvous", "--listen", address, "--home", str(tmp / name), *flags)
    server.wait_for("listening")
    return server, address


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("exit-codes")
    (tmp / "networks").write_text("0123456789abcdef  # someone else's network\n")
    main, address = _server(tmp, "r")
    refusing, refusing_address = _server(tmp, "r2", "--networks", str(tmp / "networks"))
    silent = SilentRendezvous()
    home = tmp / "home"
    assert ptunnel("init", "--rendezvous", address, "--home", str(home)).returncode == 0
    laptop = join(home, tmp / "laptop")
    exposer = Background("expose", str(free_port()), "--as", "web", "--home", str(home))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            exposer.wait_for("exposing")
            yield World(tmp, address, refusing_address, silent.address, home, laptop,
                        init(tmp / "lonely"), busy.getsockname()[1])
        finally:
            for process in (exposer, main, refusing):
                process.kill()
            silent.close()


def _up_config(w: World) -> str:
    path = w.tmp / "up.yaml"
    path.write_text(f"rendezvous: {w.server}\nconnect:\n  - name: web\n"
                    f"    listen: {free_port()}\n")
    return str(path)


def _bad_config(w: World) -> str:
    path = w.tmp / "bad.yaml"
    path.write_text("keepalive: soon\n")
    return str(path)


def _a_file(w: World) -> str:
    path = w.tmp / "a-file"
    path.write_text("x")
    return str(path)


Case = tuple[str, Callable[[World], list[str]], int, str]
CASES: list[Case] = [
    # --- 1: the same command can work later -----------------------------------------------
    ("invite, the rendezvous does not answer",
     lambda w: ["invite", "--rendezvous", w.silent, "--home", str(w.lonely)], 1,
     "no answer from the rendezvous"),
    ("expose, the name is held by another node",
     lambda w: ["expose", "9", "--as", "web", "--home", str(w.laptop)], 1,
     "is held by another node"),
    ("connect, no node of that name",
     lambda w: ["connect", "nosuch", "-L", str(free_port()), "--home", str(w.laptop)], 1,
     "no node named 'nosuch'"),
    ("connect, the local port is in use",
     lambda w: ["connect", "web", "-L", str(w.busy_port), "--home", str(w.laptop)], 1,
     "is already in use"),
    ("up, another ptunnel runs",
     lambda w: ["up", "-c", _up_config(w), "--home", str(w.home)], 1, "already runs"),
    ("stop, no ptunnel runs", lambda w: ["stop", "--home", str(w.laptop)], 1, "no ptunnel runs"),
    ("stop, no such forward",
     lambda w: ["stop", "nosuch", "--home", str(w.home)], 1, "has no forward named"),
    ("ping, no node of that name",
     lambda w: ["ping", "nosuch", "-n", "1", "--home", str(w.laptop)], 1,
     "no node named 'nosuch'"),
    ("ping through a running node, no node of that name",
     lambda w: ["ping", "nosuch", "-n", "1", "--home", str(w.home)], 1,
     "no node named 'nosuch'"),
    ("list, the rendezvous refuses the network",
     lambda w: ["list", "--rendezvous", w.refusing, "--home", str(w.laptop)], 1,
     "refused the list: this rendezvous does not serve network"),
    ("list, the rendezvous does not answer",
     lambda w: ["list", "--rendezvous", w.silent, "--timeout", "1", "--home", str(w.laptop)], 1,
     "no answer from the rendezvous"),
    ("netcheck, the rendezvous does not answer",
     lambda w: ["netcheck", "--rendezvous", w.silent, "--timeout", "1", "--home", str(w.laptop)],
     1, ""),
    ("rendezvous, the port is in use",
     lambda w: ["rendezvous", "--listen", w.server, "--home", str(w.tmp / "r3")], 1,
     "address already in use; stop the server that holds it"),
    # --- 2: a mistake to fix first --------------------------------------------------------
    ("init, already in a network", lambda w: ["init", "--home", str(w.home)], 2, "--force"),
    ("invite, not joined", lambda w: ["invite", "--home", str(w.tmp / "new")], 2, "not joined"),
    ("join, a mistyped code",
     lambda w: ["join", "ptn1-aaaaa-bbbbb", "--home", str(w.tmp / "new")], 2, "join code"),
    ("id, the state directory is a file", lambda w: ["id", "--home", _a_file(w)], 2,
     "is a file, not a directory"),
    ("expose, no rendezvous given",
     lambda w: ["expose", "22", "--as", "x", "--home", str(w.lonely)], 2,
     "no rendezvous server given"),
    ("connect, not joined",
     lambda w: ["connect", "web", "-L", "2222", "--home", str(w.tmp / "new")], 2, "not joined"),
    ("up, no node.yaml", lambda w: ["up", "--home", str(w.laptop)], 2, "does not exist"),
    ("ping, a name that cannot be one", lambda w: ["ping", "no/such", "--home", str(w.laptop)],
     2, "--help"),
    ("pins forget, no such pin",
     lambda w: ["pins", "forget", "nosuch", "--home", str(w.laptop)], 2, "no pin for 'nosuch'"),
    ("rendezvous, a member cap out of range",
     lambda w: ["rendezvous", "--max-members", "0", "--home", str(w.tmp / "r4")], 2,
     "max_members is 0"),
    ("config check, a mistake in the file",
     lambda w: ["config", "check", "-c", _bad_config(w)], 2, "1 problem in"),
    ("completion, an unknown shell", lambda w: ["completion", "tcsh"], 2, "invalid choice"),
    ("status, an unknown flag", lambda w: ["status", "--bogus"], 2, "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "code", "words"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_exit_status(world: World, argv: Callable[[World], list[str]], code: int,
                     words: str) -> None:
    done: subprocess.CompletedProcess[str] = ptunnel(*argv(world), timeout=60)
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    if words:
        assert len(errors) == 1, done.stderr
        assert words in errors[0], errors[0]
