"""Every command has --help; usage mistakes are one line with a hint, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunnel.cli.main import discover_commands, main

COMMANDS = [module.NAME for module in discover_commands()]


def test_foundation_commands_are_present() -> None:
    assert {"init", "invite", "join", "id"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert f"ptunnel {command}" in out and "--home" in out


def test_top_level_help_lists_commands() -> None:
    done = subprocess.run([sys.executable, "-m", "tunnel", "--help"], capture_output=True,
                          text=True, check=True)
    for command in COMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize("argv", [["bogus"], ["join"], ["init", "--nope"]])
def test_usage_errors_are_one_line(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "tunnel", *argv], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--help" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_commands_usage_shows_its_own_options_then_global_options(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    usage = out.split("\n\n", 1)[0]
    assert usage.startswith(f"usage: ptunnel {command} [-h]")
    assert usage.endswith("[global options]") and "--log-format" not in usage, usage
    # ...and the global options are described once, in their own section.
    assert "global options (before or after the command):" in out and "--log-format" in out


def test_top_level_help_has_one_line_per_command_and_says_how_to_start() -> None:
    done = subprocess.run([sys.executable, "-m", "tunnel", "--help"], capture_output=True,
                          text=True, check=True)
    listing = done.stdout.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(listing) == 1 + len(COMMANDS), listing  # the COMMAND line, then one each
    assert "ptunnel init --rendezvous SERVER:7000 && ptunnel invite" in done.stdout
    assert "ptunnel join -" in done.stdout
    assert "exit status: 0 done; 1 failed" in done.stdout
