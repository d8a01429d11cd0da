"""`ptunnel completion bash|zsh|fish`: a shell completion script, generated from the parser
(by `shtab`, so a new command or option completes without editing a script)."""

from __future__ import annotations

import argparse

from tunnel.cli.context import Context

NAME = "completion"
ORDER = 42
HELP = "print a shell completion script (bash, zsh or fish)"
DESCRIPTION = """\
Print the completion script for your shell; load it from your shell's start-up file:

  bash:  ptunnel completion bash > ~/.local/share/bash-completion/completions/ptunnel
  zsh:   ptunnel completion zsh > ~/.zfunc/_ptunnel    (with fpath+=~/.zfunc before compinit)
  fish:  ptunnel completion fish > ~/.config/fish/completions/ptunnel.fish
"""
LOADS_CONFIG = False
SHELLS = ("bash", "zsh", "fish")
# What a value of these options is, for the shell to offer files or directories.
FILE_OPTIONS = {"config", "before_config", "db"}
DIRECTORY_OPTIONS = {"home", "before_home"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def run(args: argparse.Namespace, ctx: Context) -> int:
    ctx.out(script(args.shell).rstrip("\n"))
    return 0


def script(shell: str) -> str:
    import shtab

    from tunnel.cli.main import build_parser, discover_commands

    parser = build_parser(discover_commands())
    for each in _parsers(parser):
        for action in each._actions:
            if action.dest in FILE_OPTIONS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif action.dest in DIRECTORY_OPTIONS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return str(shtab.complete(parser, shell=shell))


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every subcommand's parser."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(_parsers(child))
    return found
