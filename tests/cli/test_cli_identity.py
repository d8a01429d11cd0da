"""init / invite / join / id across two state directories, and the permission rules."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tunnel.cli.main import main
from tunnel.keys.identity import NETWORK_KEY_FILE, NODE_KEY_FILE


def run(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str, str]:
    code = main([argv[0], "--home", str(home), *argv[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_invite_join_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert run(capsys, alice, "init")[0] == 0
    code, invite_out, _ = run(capsys, alice, "invite")
    assert code == 0
    lines = invite_out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptn1-")

    assert run(capsys, bob, "join", lines[0])[0] == 0
    ids = [json.loads(run(capsys, home, "id", "--json")[1]) for home in (alice, bob)]
    assert ids[0]["network_id"] == ids[1]["network_id"]
    assert ids[0]["public_key"] != ids[1]["public_key"]
    assert len(ids[0]["network_id"]) == 16
    # The secret itself never appears in `id`.
    secret_line = (alice / NETWORK_KEY_FILE).read_text().strip()
    assert secret_line not in json.dumps(ids[0])


def test_files_are_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    run(capsys, home, "init")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in (NODE_KEY_FILE, NETWORK_KEY_FILE):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600


def test_loose_key_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    run(capsys, home, "init")
    (home / NODE_KEY_FILE).chmod(0o644)
    code, out, err = run(capsys, home, "id")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "chmod 600" in err and "Traceback" not in err


def test_loose_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    run(capsys, home, "init")
    home.chmod(0o755)
    code, _, err = run(capsys, home, "invite")
    assert code == 2 and "chmod 700" in err and err.count("\n") == 1


def test_mistyped_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(capsys, alice, "init")
    code = run(capsys, alice, "invite")[1].strip()
    position = 20
    typo = code[:position] + ("b" if code[position] != "b" else "c") + code[position + 1 :]
    status, _, err = run(capsys, bob, "join", typo)
    assert status == 2 and "typo" in err and err.count("\n") == 1
    assert not (bob / NETWORK_KEY_FILE).exists()
    # Dropping a character is caught too, and so is something that is not a code at all.
    assert run(capsys, bob, "join", code[:-1])[0] == 2
    assert run(capsys, bob, "join", "hello")[0] == 2
    # Case, spaces and dashes do not matter.
    assert run(capsys, bob, "join", code.upper().replace("-", " "))[0] == 0


def test_init_refuses_to_replace_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    run(capsys, home, "init")
    before = (home / NETWORK_KEY_FILE).read_text()
    code, _, err = run(capsys, home, "init")
    assert code == 2 and "--force" in err
    assert (home / NETWORK_KEY_FILE).read_text() == before
    assert run(capsys, home, "init", "--force")[0] == 0
    assert (home / NETWORK_KEY_FILE).read_text() != before


def test_join_other_network_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(capsys, alice, "init")
    run(capsys, bob, "init")
    code = run(capsys, alice, "invite")[1].strip()
    status, _, err = run(capsys, bob, "join", code)
    assert status == 2 and "--force" in err
    assert run(capsys, bob, "join", code, "--force")[0] == 0
    assert run(capsys, bob, "invite")[1].strip() == code


def test_commands_need_a_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, tmp_path / "empty", "invite")
    assert code == 2 and out == "" and "ptunnel join CODE" in err and err.count("\n") == 1
