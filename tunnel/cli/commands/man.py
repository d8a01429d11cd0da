"""`ptunnel man`: the manual page ptunnel(1) in roff, generated from the argument parser."""

from __future__ import annotations

import argparse

from tunnel.cli.context import Context

NAME = "man"
ORDER = 43
HELP = "print the manual page (roff): ptunnel man | man -l -"
DESCRIPTION = """\
Print the manual page ptunnel(1), generated from the same parser as --help. Read it with
`ptunnel man | man -l -`, or install it:

  ptunnel man | gzip > ~/.local/share/man/man1/ptunnel.1.gz
"""
LOADS_CONFIG = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own."""


def run(args: argparse.Namespace, ctx: Context) -> int:
    from tunnel.cli.main import build_parser, discover_commands
    from tunnel.cli.manpage import render

    ctx.out(render(build_parser(discover_commands())).rstrip("\n"))
    return 0
