"""Global options work before and after the subcommand, as a user types them; exit codes split
usage mistakes (2) from failures of the run (1)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.support.cli import init, ptunnel, silent_rendezvous
from tunnel.cli import main


def parse(*argv: str) -> argparse.Namespace:
    build_parser, discover_commands = main.build_parser, main.discover_commands
    merge_global_options = main.merge_global_options
    args = build_parser(discover_commands()).parse_args(list(argv))
    merge_global_options(args)
    return args


@pytest.mark.parametrize("argv", [
    ("-q", "id"), ("id", "-q"), ("--quiet", "id"),
])
def test_quiet_before_or_after(argv: tuple[str, ...]) -> None:
    args = parse(*argv)
    assert args.quiet == 1 and args.command == "id"
    assert not any(name.startswith("before_") for name in vars(args))


def test_counts_add_up_and_the_later_value_wins() -> None:
    args = parse("-v", "--home", "/a", "--log-format", "json", "id", "-v",
                 "--home", "/b")
    assert args.verbose == 2
    assert args.home == "/b"  # given after the command: that one
    assert args.log_format == "json"  # given only before: kept
    assert main.log_level(args, "info") == "debug"
    assert main.log_level(parse("--log-level", "error", "id", "-v"), "error") == "warning"


def test_quiet_before_the_command_through_the_cli(tmp_path: Path) -> None:
    """The issue's `ptunnel -q ping` failed with `unrecognized arguments`: now both spellings get
    as far as the command itself (which finds no network in this empty state directory)."""
    home = str(tmp_path / "new")
    for argv in (("-q", "ping", "nobody", "--home", home),
                 ("ping", "nobody", "-q", "--home", home),
                 ("-q", "--home", home, "ping", "nobody")):
        done = ptunnel(*argv)
        assert done.stderr.startswith("ptunnel ping: error:"), done.stderr
        assert "not joined" in done.stderr and done.returncode == 2


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_options_before_and_after(tmp_path: Path, where: str) -> None:
    home = init(tmp_path / "a")
    options = ["-v", "--log-format", "json"]
    argv = [*options, "id", "--home", str(home)] if where == "before" else \
        ["id", "--home", str(home), *options]
    done = ptunnel(*argv, "--log-level", "warning", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["network_id"]


def test_home_before_the_command(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    done = ptunnel("--home", str(home), "id", "--json")
    assert done.returncode == 0, done.stderr


# --- exit codes ------------------------------------------------------------------------------

def test_usage_mistake_exits_2() -> None:
    done = ptunnel("connect", "web")  # no -L
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def test_bad_config_exits_2(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    (home / "node.yaml").write_text("keepalive: soon\n")
    done = ptunnel("up", "--home", str(home))
    assert done.returncode == 2 and "expected a number" in done.stderr


def test_not_joined_exits_2(tmp_path: Path) -> None:
    done = ptunnel("invite", "--home", str(tmp_path / "new"))
    assert done.returncode == 2 and "ptunnel join CODE" in done.stderr


def test_silent_rendezvous_exits_1(tmp_path: Path) -> None:
    """The command ran and the world did not answer: running it again later may work."""
    home = init(tmp_path / "a")
    with silent_rendezvous() as server:
        done = ptunnel("list", "--home", str(home), "--rendezvous", server.address,
                       "--timeout", "0.3")
    assert done.returncode == 1, done.stderr
    assert "no answer from the rendezvous" in done.stderr and done.stderr.count("\n") == 1
