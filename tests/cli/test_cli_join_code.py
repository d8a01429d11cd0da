"""`invite` names the rendezvous and its pinned key (ptn2); `join -` reads the code from stdin,
remembers the rendezvous and pins its key; ptn1 codes still join."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from tests.support.cli import silent_rendezvous
from tunnel.cli.context import Context
from tunnel.cli.main import main
from tunnel.keys.joincode import decode_join_code
from tunnel.keys.netkeys import encode_key, fingerprint
from tunnel.keys.pins import JOINED_RENDEZVOUS_FILE, KNOWN_RENDEZVOUS_FILE, ServerPins

SERVER = "vps.example.org:7000"
SERVER_KEY = bytes(range(200, 232))


def run(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str, str]:
    code = main([argv[0], "--home", str(home), *argv[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_invite_and_join_stdin_carry_the_rendezvous_and_its_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTUNNEL_RENDEZVOUS", raising=False)
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert run(capsys, alice, "init")[0] == 0
    ServerPins(alice).pin(SERVER, SERVER_KEY)  # alice's node met the server before
    code, out, _ = run(capsys, alice, "invite", "--rendezvous", SERVER)
    assert code == 0 and out.startswith("ptn2-") and out.count("\n") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO(out))
    code, out, err = run(capsys, bob, "join", "-")
    assert code == 0, err
    assert SERVER in out and fingerprint(SERVER_KEY) in out
    assert ServerPins(bob).get(SERVER) == SERVER_KEY
    for name in (KNOWN_RENDEZVOUS_FILE, JOINED_RENDEZVOUS_FILE):
        assert stat.S_IMODE((bob / name).stat().st_mode) == 0o600
    # Bob needs no --rendezvous now, and his own invite names the same server and key.
    code, out, _ = run(capsys, bob, "invite")
    assert code == 0
    again = decode_join_code(out)
    assert again.servers == (SERVER,) and again.server_key == SERVER_KEY


def test_join_reads_nothing_from_an_empty_stdin(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(capsys, tmp_path / "h", "join", "-")
    assert code == 2 and out == "" and err.count("\n") == 1 and "standard input" in err


def test_invite_without_a_rendezvous_or_its_key_says_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTUNNEL_RENDEZVOUS", raising=False)
    home = tmp_path / "h"
    run(capsys, home, "init")
    code, out, err = run(capsys, home, "invite")
    assert code == 0 and out.startswith("ptn1-") and "no rendezvous is configured" in err
    # A rendezvous whose key is neither configured nor pinned is asked for it; one that does
    # not answer gets no code that would leave the other machine to trust on first use.
    with silent_rendezvous() as silent:
        code, out, err = run(capsys, home, "invite", "--rendezvous", silent.address)
        assert silent.wait_for_datagram(timeout=0)  # it did ask
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"no answer from the rendezvous at {silent.address}" in err
    assert "`rendezvous_key: KEY`" in err
    # A configured key is as good as a pin.
    monkeypatch.setenv("PTUNNEL_RENDEZVOUS_KEY", encode_key(SERVER_KEY))
    code, out, _ = run(capsys, home, "invite", "--rendezvous", SERVER)
    assert decode_join_code(out).server_key == SERVER_KEY


def test_a_joined_rendezvous_is_the_default_address(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTUNNEL_RENDEZVOUS", raising=False)
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    (home / JOINED_RENDEZVOUS_FILE).write_text("198.51.100.7:7000\n")
    ctx = Context(home=home, keys={}, config={})
    assert ctx.rendezvous_addr() == ("198.51.100.7", 7000)
    ctx.config["rendezvous"] = ("192.0.2.1", 9)
    assert ctx.rendezvous_addr() == ("192.0.2.1", 9)  # configuration wins
