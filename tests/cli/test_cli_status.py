"""`ptunnel status` and `ptunnel ping` as a user runs them, against running commands whose peer
or rendezvous is not there: every peer's state comes first, a connect still waiting for its peer
says why, the rendezvous's health shows, and a lost ping says where it was lost."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.cli import (
    Background,
    init,
    join,
    ptunnel,
    running,
    silent_rendezvous,
    status,
)
from tests.support.loopback import free_port, free_udp_pair


def status_text(home: Path) -> list[str]:
    done = ptunnel("status", "--home", str(home))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def poll(home: Path, check: Callable[[dict[str, Any]], bool],
         timeout: float = 40) -> dict[str, Any]:
    """The first status of `home`'s instance for which `check` holds."""
    deadline = time.monotonic() + timeout
    while True:
        instance = status(home) if list((home / "run").glob("*.sock")) else None
        if instance is not None and check(instance):
            return instance
        assert time.monotonic() < deadline, instance
        time.sleep(0.3)


def line_with(lines: list[str], text: str) -> str:
    found = [line for line in lines if text in line]
    assert found, lines
    return found[0]


@contextmanager
def frozen(command: Background) -> Iterator[None]:
    """The process is stopped (SIGSTOP): registered at the rendezvous, answering nothing."""
    command.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        command.proc.send_signal(signal.SIGCONT)


def test_status_shows_a_connect_waiting_for_a_frozen_peer(tmp_path: Path, rendezvous: str) -> None:
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    local = free_port()
    with running("expose", "8080", "--as", "web", "--home", str(home),
                 "--rendezvous", rendezvous) as exposer:
        exposer.wait_for("exposing")
        assert status(home)["rendezvous"]["names"] == ["web"]
        with frozen(exposer), running("connect", "web", "-L", str(local), "--timeout", "60",
                                      "--home", str(laptop), "--rendezvous", rendezvous) as connect:
            connect.wait_for("introduced to web")
            instance = poll(laptop, lambda i: bool(i["connections"] and i["peers"]))
            (connection,) = instance["connections"]
            assert connection["ready"] is False and connection["listen"] == f"127.0.0.1:{local}"
            assert connection["reason"].startswith("found 'web' but no path opened (tried ")
            assert 0 <= connection["waiting_s"] < 30
            (peer,) = instance["peers"]
            assert peer["name"] == "web" and peer["state"] == "connecting"
            health = instance["rendezvous"]
            assert health["server"] == rendezvous and health["registered"] is True
            assert health["names"] == [] and 0 <= health["last_answer_s"] < 20

            lines = status_text(laptop)
            waiting = line_with(lines, "waiting: web")
            assert waiting.startswith(f"  waiting: web on 127.0.0.1:{local} for ")
            assert ": found 'web' but no path opened (tried " in waiting
            assert line_with(lines, "  web: ").startswith("  web: connecting  sent 0 B")
            assert line_with(lines, f"rendezvous {rendezvous}").startswith(
                f"  rendezvous {rendezvous}: registered (no names), last answer ")


def test_ping_says_where_each_ping_was_lost(tmp_path: Path, rendezvous: str) -> None:
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    local = free_port()
    with running("expose", "8080", "--as", "web", "--home", str(home),
                 "--rendezvous", rendezvous) as exposer:
        exposer.wait_for("exposing")
        with running("connect", "web", "-L", str(local), "--home", str(laptop),
                     "--rendezvous", rendezvous) as connect:
            connect.wait_for("ready:")
            assert line_with(status_text(laptop), "  web: ").startswith("  web: direct lan ")
            with frozen(exposer):
                # Through the running connect (its control socket): sent on the path, unanswered.
                done = ptunnel("ping", "web", "-n", "2", "-i", "0.2", "--home", str(laptop))
                assert done.returncode == 1, done.stderr
                lines = done.stdout.splitlines()
                assert lines[0].startswith("no reply from web seq=0: no answer (path direct lan "
                                           "127.0.0.1:"), lines
                assert lines[1].startswith("no reply from web seq=1: no answer (path direct lan ")
                assert lines[2] == "--- web ping statistics ---", lines
                assert lines[3].startswith("2 sent, 0 received, 100% loss (2 no answer), via "
                                           "direct lan 127.0.0.1:"), lines
                assert ", rtt" not in lines[3]  # an RTT from before the peer froze is no news
                done = ptunnel("ping", "web", "-n", "2", "-i", "0.2", "--json", "--home",
                               str(laptop))
                summary = json.loads(done.stdout)
                assert summary["lost"] == {"no_session": 0, "no_path": 0, "no_answer": 2}
                assert [r["lost"] for r in summary["replies"]] == ["no_answer", "no_answer"]
                assert summary["received"] == 0 and summary["state"] == "direct"

                # Data that is never acknowledged: the path goes silent and the peer reconnects;
                # status shows that first, the path only as what it was.
                with socket.create_connection(("127.0.0.1", local), timeout=10) as client:
                    client.sendall(b"anyone there?")
                    instance = poll(laptop, lambda i: i["peers"][0]["state"] != "direct")
                    assert instance["peers"][0]["state"].startswith("reconnecting since ")
                    (connection,) = instance["connections"]
                    assert connection["ready"] is False
                    assert connection["reason"].startswith("lost 'web': reconnecting since ")
                    lines = status_text(laptop)
                    assert line_with(lines, "  web: ").startswith(
                        "  web: reconnecting since "), lines
                    assert "(last path " in line_with(lines, "  web: ")
                    assert line_with(lines, "waiting: web").startswith(
                        f"  waiting: web on 127.0.0.1:{local} for ")


def test_status_when_the_rendezvous_stops_answering(tmp_path: Path) -> None:
    port = free_udp_pair()
    server = f"127.0.0.1:{port}"
    laptop = init(tmp_path / "laptop")
    (laptop / "node.yaml").write_text(f"rendezvous: {server}\n"
                                      f"connect:\n  - name: db\n    listen: {free_port()}\n")
    with running("rendezvous", "--listen", server, "--db", str(tmp_path / "r.db"),
                 "--home", str(tmp_path / "r")) as rendezvous:
        rendezvous.wait_for("listening")
        with running("up", "--home", str(laptop)):
            instance = poll(laptop, lambda i: bool(i["connections"])
                            and (i["connections"][0]["reason"] or "").startswith("no node named"))
            assert instance["connections"][0]["reason"] == (
                "no node named 'db' in your network; is `ptunnel expose` running there?")
            health = instance["rendezvous"]
            assert health["registered"] is True and health["last_answer_s"] < 5
            assert line_with(status_text(laptop), "waiting: db").startswith(
                "  waiting: db on 127.0.0.1:")

            rendezvous.stop(signal.SIGTERM)
            instance = poll(laptop, lambda i: i["rendezvous"]["registered"] is False)
            health = instance["rendezvous"]
            assert health["unanswered_s"] >= 5 and health["last_answer_s"] >= 5
            assert instance["connections"][0]["reason"].startswith(
                f"no answer from the rendezvous at {server} for ")
            time.sleep(1.0)
            later = status(laptop)["rendezvous"]
            assert later["registered"] is False
            assert later["last_answer_s"] >= health["last_answer_s"] + 0.9  # it keeps growing
            assert line_with(status_text(laptop), f"rendezvous {server}").startswith(
                f"  rendezvous {server}: not registered, last answer ")


def test_status_when_the_rendezvous_never_answered(tmp_path: Path) -> None:
    laptop = init(tmp_path / "laptop")
    with silent_rendezvous() as server:
        (laptop / "node.yaml").write_text(f"rendezvous: {server.address}\n"
                                          f"connect:\n  - name: db\n    listen: {free_port()}\n")
        with running("up", "--home", str(laptop)):
            server.wait_for_datagram()
            first = poll(laptop, lambda i: bool(i["connections"]))
            health = first["rendezvous"]
            assert health == {"server": server.address, "servers": [server.address],
                              "registered": False, "names": [], "last_answer_s": None,
                              "unanswered_s": health["unanswered_s"]}
            (connection,) = first["connections"]
            assert connection["ready"] is False and connection["waiting_s"] is not None
            lines = status_text(laptop)
            assert line_with(lines, f"rendezvous {server.address}").startswith(
                f"  rendezvous {server.address}: not registered, no answer yet (asking for ")
            assert ": waiting for the rendezvous at " in line_with(lines, "waiting: db") or (
                ": no answer from the rendezvous at " in line_with(lines, "waiting: db"))
            later = poll(laptop, lambda i: i["rendezvous"]["unanswered_s"] >= 5.5)
            assert later["connections"][0]["reason"].startswith(
                f"no answer from the rendezvous at {server.address} for ")
            assert later["connections"][0]["waiting_s"] > connection["waiting_s"]
